"""larpanda.ssl: Sonata-style self-distillation (views, masking, student/EMA teacher, losses)."""

from .sonata import OnlineCluster, SonataTask, sinkhorn_knopp
from .views import MultiViewGenerator, SSLTransform, collate_views, generate_mask

__all__ = ["SonataTask", "OnlineCluster", "sinkhorn_knopp", "MultiViewGenerator", "SSLTransform", "collate_views", "generate_mask"]
