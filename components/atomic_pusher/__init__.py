"""A Pusher that makes each model version appear in TF Serving's directory whole or not at all."""
