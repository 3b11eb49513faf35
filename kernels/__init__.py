"""Fused ops (torch.library custom ops with per-device implementations), installed as `ascend_graph.kernels`."""
