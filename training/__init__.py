"""Making models: starting structures, DFT labels, data-set curation (committee selection, merging), SAM training and test errors."""
