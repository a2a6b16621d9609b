"""Text-to-video: diffusers pipelines configured from the workflow config, and the tiny embedded model."""
