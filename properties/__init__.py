"""Default YAML configurations (model/ and dataset/), installed as package data."""
