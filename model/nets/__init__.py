"""The networks: everything a forward pass runs, and nothing about data, training or reports.

    vrt.py                 our VRT (official-checkpoint compatible; ``VRT_PRESETS``, the one preset registry)
    vrt_tiling.py          tiled inference over (frames, height, width) with overlap blending
    deform_conv.py         the flow-guided deformable convolution (bilinear sampling + one matmul)
    cpu_attention.py       window attention's C kernel for CPU training (csrc/cpu_attention.c)
    spike_encoder3d.py     SpikeEncoder3D: voxels [B, T, K, H, W] -> Fs_1..Fs_4 at VRT's scales
    spike_temporal_sa.py   per-pixel temporal self-attention on the spike features
    fusion/                temporal cross-attention fusions and the spike heads
    registry.py            ``register_fuse_type``: one implementation per name of schemas/fuse_types.py
    integrate_vrt.py       SpikeVRT: VRT.encode -> fuse_features -> VRT.decode; the registrations, ``build_model``

Imports point inward only: nothing here imports ``model.train``, ``model.test`` or the evaluation code.
"""
