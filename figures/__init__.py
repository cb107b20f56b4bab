"""One script per figure: compute(config) -> data, plot(data) -> Figure; run by `pcsim figures`."""
