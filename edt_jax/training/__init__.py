"""Training infrastructure: device meshes and sharding rules (more arrives with the training loop)."""
