"""tickcast: stock-price MLOps pipeline."""
