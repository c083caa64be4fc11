"""The TinyIMGserver operator: ImageModel resources -> model-server Deployments."""
