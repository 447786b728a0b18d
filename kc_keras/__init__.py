"""kc_keras: Knowledge Concentration (Gao et al. 2017) in Keras 3."""

__version__ = "0.1.0"
