"""What a generated image says about itself: generation parameters in the file, an invisible
watermark in the pixels, and the audit record of the job that made it."""
