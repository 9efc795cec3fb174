"""Semantic segmentation on top of a bench backbone: heads (UPerNet, linear BN head), the mmseg data pipeline,
layer-wise lr decay, and a resumable DDP/AMP training loop. The protocol lives in `bench.protocols.segmentation`."""
