"""Each held-out example's anomaly score (its ELBO under the model), scored in batches on Beam."""
