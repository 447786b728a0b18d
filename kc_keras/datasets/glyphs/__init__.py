"""glyphs package: the glyphs-of-real-fonts dataset (fonts, rendering, filters, verticals, writer)."""
