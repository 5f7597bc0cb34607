"""What authz tells operators about itself: Prometheus metrics and the decision log."""
