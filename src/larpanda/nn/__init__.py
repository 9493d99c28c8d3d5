"""larpanda.nn: the PTv3 (PT-v3m2) backbone in pure PyTorch.

Modules: `serialization` (z-order / Hilbert codes), `sparse_conv` (submanifold conv, kernel maps),
`attention` (serialized patch attention), `ptv3` (`PointTransformerV3`, `upcast`). Heavy imports are
left to the submodules.
"""
