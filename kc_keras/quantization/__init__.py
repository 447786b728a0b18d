"""quantization package."""
