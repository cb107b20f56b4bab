"""pcsim: predictive coding on computational graphs."""
