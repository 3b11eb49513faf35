"""Graph passes (fusions) of ascend_graph, installed as `ascend_graph.passes`. One pass per file."""
