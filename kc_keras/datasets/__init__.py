"""datasets package: builders of datasets the data sources read."""
