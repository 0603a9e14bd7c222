"""Pre-push infra validation without Docker: serve the candidate with `vaetfx serve`, query it."""
