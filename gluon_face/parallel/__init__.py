"""Heads for very many identities: class centres sharded across contexts, Partial FC.

:class:`ShardedMarginHead` splits the (C, E) class-centre matrix of an
:class:`~gluon_face.heads.ArcMarginBlock` over a list of contexts and computes
the margin softmax cross-entropy exactly across the shards;
:class:`PartialFC` trains it on the batch's classes plus a random sample of
the others.  Both own their optimizer: ``forward_backward`` returns the losses
and the embedding gradients for the backbone, ``step`` updates the centres.
"""
from .partial_fc import PartialFC, get_parallel_head
from .sharded import WEIGHT_KEY, ShardedMarginHead

__all__ = ["PartialFC", "ShardedMarginHead", "WEIGHT_KEY", "get_parallel_head"]
