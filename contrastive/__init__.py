"""contrastive: self-supervised contrastive pretraining and the SimCLRv2 few-label pipeline."""

__version__ = "0.1.0"
