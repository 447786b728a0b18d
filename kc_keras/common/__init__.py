"""What the kc_keras binaries share: flags and the start-up environment."""
