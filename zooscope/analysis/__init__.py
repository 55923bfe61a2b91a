"""What a trained autoencoder is used for: fidelity reports, generation, property prediction."""
