"""A report a person can look at: the VAE's reconstructions, samples, latent space and ELBO curves."""
