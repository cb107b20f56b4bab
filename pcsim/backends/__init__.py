"""Backends integrate the dynamics' vector field: scipy (reference), torch (fixed step, CUDA),
brian2 (NeuronGroups and Synapses). Each is imported only when asked for."""
