"""The graph clustering head (`larpanda.tasks.graph_head`): exact clustering with hand-set scores, batching,
row alignment of predictions, training reduces the loss."""

import numpy as np
import pytest
import torch
from torch import nn

from larpanda.config import load_config
from larpanda.data.point import collate
from larpanda.data.transforms import SCALE, prepare
from larpanda.nn.graph import segment_member_row
from larpanda.tasks.graph_head import GraphHead
from larpanda.tasks.panoptic import PanopticModel

MUON = 2


def _tracks():
    """Three straight tracks (voxels): A along x and B along y touch at (20, 10..11, 10); C along z has a
    gap of 4 voxels. Returns (positions (N, 3), track label (N,))."""
    a = [(x, 10, 10) for x in range(10, 31)]
    b = [(20, y, 10) for y in range(11, 31)]
    c = [(40, 40, z) for z in range(10, 21)] + [(40, 40, z) for z in range(25, 36)]
    pos = np.array(a + b + c, np.float32)
    return pos, np.repeat([0, 1, 2], [len(a), len(b), len(c)])


def _point(pos_list):
    """A collated batch of events given by their voxel positions (coord in the model's normalisation)."""
    pts = [{"coord": torch.as_tensor(p / SCALE), "feat": torch.zeros(len(p), 4)} for p in pos_list]
    offset = torch.cumsum(torch.tensor([len(p) for p in pos_list]), 0)
    return {"coord": torch.cat([p["coord"] for p in pts]), "feat": torch.cat([p["feat"] for p in pts]), "offset": offset}


class _Take(nn.Module):  # h = the first k input channels (one-hot track labels)
    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        return x[:, : self.k]


class _SameLabelEdge(nn.Module):  # voxel edge feature [h_i + h_j, |h_i − h_j|, ...]: +10 same label, −10 not
    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, ef):
        return (10 - 20 * ef[:, self.k: 2 * self.k].sum(1, keepdim=True))


class _SameLabelFragments(nn.Module):  # fragment nodes [mean h, ...]: join fragments of one label, PID μ
    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x, e, edges):
        h = x[:, : self.k]
        logit = 10 - 20 * (h[edges[0]] - h[edges[1]]).abs().sum(1)
        pid = torch.full((len(x), 5), -10.0)
        pid[:, MUON] = 10.0
        return x, logit, pid


def _hand_head(k=3, join_fragments=True, **kwargs):
    kwargs.setdefault("led_fragments", False)  # the hand-set fragment modules give PID logits only
    head = GraphHead(in_channels=k, hidden=k, **kwargs)
    head.point = _Take(k)
    head.motif = nn.Linear(k, 5)
    with torch.no_grad():
        head.motif.weight.zero_()
        head.motif.bias.copy_(torch.tensor([0.0, 10.0, 0.0, 0.0, 0.0]))  # every point a track
    head.voxel_edge = _SameLabelEdge(k)
    head.fragment = _SameLabelFragments(k) if join_fragments else _NeverJoin()
    return head.eval()


class _NeverJoin(nn.Module):
    def forward(self, x, e, edges):
        return x, torch.full((edges.shape[1],), -10.0), torch.zeros(len(x), 5)


def _partition(ids):
    """Canonical form of a partition: each element's label is the index of its label's first element."""
    ids = np.asarray(ids)
    _, first, inv = np.unique(ids, return_index=True, return_inverse=True)
    return first[inv]


def test_hand_scored_head_separates_touching_tracks_and_bridges_the_gap():
    pos, label = _tracks()
    feat = torch.nn.functional.one_hot(torch.as_tensor(label), 3).float()
    point = _point([pos])
    pp = _hand_head().postprocess(_hand_head()(feat, point), background_class=5)
    inst = pp["instance"][0].numpy()
    assert (inst >= 0).all()
    np.testing.assert_array_equal(_partition(inst), _partition(label))
    assert (pp["cls"][0].numpy() == MUON).all()
    # min_points: instances smaller than it become stuff (−1, background class); the others are renumbered
    head = _hand_head()
    assert head.set_post(min_points=21)["min_points"] == 21
    pp = head.postprocess(head(feat, point), background_class=5)
    inst, cls = pp["instance"][0].numpy(), pp["cls"][0].numpy()
    np.testing.assert_array_equal(inst, np.where(label == 1, -1, np.where(label == 0, 0, 1)))  # B has 20 voxels
    assert (cls[label == 1] == 5).all() and (cls[label != 1] == MUON).all()
    # without the fragment stage the gapped track C stays in two pieces: the gap is bridged by stage 2
    out = _hand_head(join_fragments=False)(feat, point)
    assert len(np.unique(out["particle_of_thing"].numpy())) == 4


class _BridgedFragments(nn.Module):  # labels 0 and 1 never join; label 2 (one voxel) joins both (logit 3)
    def forward(self, x, e, edges):
        h = x[:, :3]
        bridge = (h[edges[0], 2] + h[edges[1], 2]) > 0
        logit = torch.where(bridge, torch.tensor(3.0), 10 - 20 * (h[edges[0]] - h[edges[1]]).abs().sum(1))
        return h, logit, torch.zeros(len(x), 5)  # node states of width hidden (3), as GraphNet's


def test_one_voxel_fragment_does_not_merge_two_tracks_under_average_linkage():
    # tracks A (x 10..29) and B (x 31..50) along one line, one voxel s at x 30 touching both: the fragment
    # stage scores s "same particle" with A and with B (p 0.95) and A with B "different" (p 0)
    pos = np.array([(x, 10, 10) for x in range(10, 51)], np.float32)
    label = np.where(pos[:, 0] < 30, 0, np.where(pos[:, 0] > 30, 1, 2))
    feat = torch.nn.functional.one_hot(torch.as_tensor(label), 3).float()
    head = _hand_head()
    head.fragment = _BridgedFragments()
    assert head.post["linkage"] == "average"
    part = head(feat, _point([pos]))["particle_of_thing"].numpy()
    assert part[label == 0].min() == part[label == 0].max() and part[label == 1].min() == part[label == 1].max()
    assert part[0] != part[-1] and part[label == 2][0] in (part[0], part[-1])
    head.set_post(linkage="single")  # components of the kept edges: s merges A and B
    assert len(np.unique(head(feat, _point([pos]))["particle_of_thing"].numpy())) == 1
    with pytest.raises(Exception, match="linkage"):
        head.set_post(linkage="complete")


def test_batch_equals_event_by_event():
    torch.manual_seed(0)
    head = GraphHead(in_channels=3, level="interaction", hidden=16).eval()
    with torch.no_grad():
        head.voxel_edge[2].bias.fill_(1.0)  # keep most voxel edges: a few fragments per track
    pos, label = _tracks()
    events = [pos, pos[::2] + 3.0, np.concatenate([pos, pos + [0, 0, 60]])]
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(len(p), 3, generator=g) for p in events]
    with torch.no_grad():
        whole = head.postprocess(head(torch.cat(feats), _point(events)), background_class=0)
        for b, (p, f) in enumerate(zip(events, feats)):
            one = head.postprocess(head(f, _point([p])), background_class=0)
            n = len(p)
            for key in ("instance", "cls"):
                np.testing.assert_array_equal(whole[key][b, :n].numpy(), one[key][0].numpy())
            assert (whole["instance"][b, n:] == -1).all()


def _fixture_event(fixtures_dir, perm=None):
    """The real fixture event (some rows pushed below the 0.13 MeV cut), its rows permuted by ``perm``."""
    from larpanda.data.pilarnet import event_from_labels

    d = np.load(fixtures_dir / "pilarnet_m_test_event0_recon.npz")
    energy = d["energy"].copy()
    energy[::50] = 0.05
    perm = np.arange(len(energy)) if perm is None else perm
    cols = [d[k].astype(np.int64)[perm] for k in ("voxel", "segment_motif", "segment_pid", "instance_particle",
                                                  "instance_interaction")]
    return event_from_labels(cols[0], energy[perm], *cols[1:])


@pytest.fixture(scope="module")
def event(fixtures_dir):
    return _fixture_event(fixtures_dir)


def _graph_model(level="particle"):
    torch.manual_seed(0)
    m = PanopticModel(load_config("tiny", "model"), level=level, mode="decoder", head="graph", graph=dict(hidden=16))
    with torch.no_grad():
        m.decoder.voxel_edge[2].bias.fill_(5.0)
    return m.eval()


def test_predictions_align_with_raw_rows_and_led_is_stuff(event, fixtures_dir, one_thread):
    m = _graph_model()
    p = m.predict(event)
    n = len(event)
    assert set(p) == {"instance", "pid", "score"} and all(v.shape == (n,) for v in p.values())
    kept = prepare(event)["index"]
    cut = np.setdiff1d(np.arange(n), kept)
    assert len(cut) and (p["instance"][cut] == -1).all() and (p["pid"][cut] == -1).all()
    # the same event with its rows shuffled: the same prediction for every voxel
    shuffled = _fixture_event(fixtures_dir, np.random.default_rng(0).permutation(n))
    q = m.predict(shuffled)
    key = lambda ev: np.ravel_multi_index(ev.point[:, :3].astype(np.int64).T, (768, 768, 768))  # noqa: E731
    back = np.argsort(key(shuffled))[np.argsort(np.argsort(key(event)))]  # row of each original voxel in `shuffled`
    assert (shuffled.point[back] == event.point).all()
    np.testing.assert_array_equal(_partition(q["instance"][back]), _partition(p["instance"]))
    np.testing.assert_array_equal(q["pid"][back], p["pid"])
    # LED is stuff: a motif head that calls every point LED predicts no instance at all
    with torch.no_grad():
        m.decoder.motif.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 100.0]))
    assert (m.predict(event)["instance"] == -1).all()


def test_training_reduces_loss_and_config_round_trips(event, one_thread):
    from larpanda.tasks.panoptic import model_from_config

    for level in ("particle", "interaction"):
        m = _graph_model(level).train()
        batch = collate([prepare(event)])
        opt = torch.optim.AdamW([p for p in m.decoder.parameters()], lr=3e-3)
        first = None
        for _ in range(30):
            loss, logs = m.training_step(batch, 0)
            assert {"loss_motif", "loss_voxel_edge", "loss_fragment_edge", "loss_pid"} <= set(logs)
            assert ("loss_interaction_edge" in logs) == (level == "interaction")
            opt.zero_grad()
            loss.backward()
            opt.step()
            first = first if first is not None else float(loss.detach())
        assert float(loss.detach()) < 0.7 * first
        again = model_from_config(m.config)
        assert again.head == "graph" and again.config == m.config


def test_saved_heads_without_endpoint_features_still_load():
    """A graph head saved before the endpoint edge features (no ``endpoint_features`` key) is rebuilt
    without them, so its state dict fits."""
    from larpanda.tasks.panoptic import model_from_config

    model = PanopticModel(load_config("tiny", "model"), mode="decoder", head="graph", graph={"hidden": 8, "layers": 1, "endpoint_features": False})
    cfg = model.config
    cfg["graph"].pop("endpoint_features")
    cfg["graph"].pop("local_directions")
    again = model_from_config(cfg)
    again.load_state_dict(model.state_dict())
    assert again.decoder.fragment.edge_in[0].in_features == 5
    assert again.decoder.local is False
    cfg["graph"]["endpoint_features"] = True  # saved between the endpoint features and the local directions
    assert model_from_config(cfg).decoder.fragment.edge_in[0].in_features == 9
    assert PanopticModel(load_config("tiny", "model"), mode="decoder", head="graph", graph={"hidden": 8}).decoder.fragment.edge_in[0].in_features == 12


def test_wrong_joins_are_weighted_by_the_true_particles_they_would_merge():
    """Fragments: a one-voxel piece of an 80-voxel shower (0), a 40-voxel track (1), the rest of the shower
    (2), a one-voxel particle of its own (3). Joining 0 to 1 would merge the shower and the track: with
    ``join_weight="particle"`` that edge weighs log(1 + 40), not log(1 + 1)."""
    from larpanda.tasks.graph_head import edge_weights

    edges = torch.tensor([[0, 0, 2], [1, 2, 3]])
    size, truth_size = torch.tensor([1, 40, 79, 1]), torch.tensor([80, 40, 80, 1])
    target = torch.tensor([False, True, False])
    expect = torch.log1p(torch.tensor([40.0, 1.0, 1.0]))
    torch.testing.assert_close(edge_weights(edges, size, target, truth_size, "particle"), expect)
    torch.testing.assert_close(edge_weights(edges, size, target, truth_size, "fragment"), torch.log1p(torch.ones(3)))


def test_training_outputs_carry_the_true_cluster_sizes_per_event():
    """Two events in one batch reuse particle ids 0..2: each fragment's true size is that of its own
    event's particle (the three tracks of `_tracks`, 21 / 20 / 22 voxels; the second event every other
    voxel)."""
    pos, label = _tracks()
    events = [pos, pos[::2]]
    labels = [label, label[::2]]
    point = _point(events)
    feat = torch.cat([torch.nn.functional.one_hot(torch.as_tensor(lab), 3).float() for lab in labels])
    ids = torch.as_tensor(np.concatenate(labels)).long()
    truth = {"instance_particle": ids, "instance_interaction": torch.zeros_like(ids),
             "segment_motif": torch.ones_like(ids), "segment_pid": torch.full_like(ids, MUON)}
    out = _hand_head()(feat, point, truth)
    frag = out["fragment_of_thing"]
    expect = torch.as_tensor(np.concatenate([np.bincount(lab)[lab] for lab in labels]))
    first = segment_member_row(frag, int(frag.max()) + 1)
    torch.testing.assert_close(out["fragment_truth_size"], expect[first])
    assert set(out["fragment_truth_size"].tolist()) == {21, 20, 22, 11, 10}


def test_fragment_graph_has_knn_neighbours_in_training_and_inference_knn_at_inference():
    # six one-voxel fragments on a line (six labels, never joined): 1 neighbour each gives the chain's 5 edges,
    # 5 the complete graph's 15
    pos = np.array([(10.0 * k, 0.0, 0.0) for k in range(6)], np.float32)
    ids = torch.arange(6)
    feat = torch.nn.functional.one_hot(ids, 6).float()
    truth = {"instance_particle": ids, "instance_interaction": ids, "segment_motif": torch.ones_like(ids),
             "segment_pid": torch.full_like(ids, MUON)}
    for level in ("particle", "interaction"):
        head = _hand_head(k=6, join_fragments=False, level=level, knn=1, inference_knn=5)
        if level == "interaction":
            head.particle = _NeverJoin()
        train, infer = head(feat, _point([pos]), truth), head(feat, _point([pos]))
        assert set(zip(*train["fragment_edges"].tolist())) == {(k, k + 1) for k in range(5)}
        assert infer["fragment_edges"].shape[1] == 15
        if level == "interaction":  # the particle graph keeps knn at inference
            assert infer["interaction_edges"].shape[1] == 5
    head = GraphHead(in_channels=3)
    assert head.post["inference_knn"] == 16  # FRAGMENT_INFERENCE_KNN
    assert GraphHead(3, level="interaction", knn=5).post["inference_knn"] == 16
    assert head.set_post(inference_knn="2")["inference_knn"] == 2
    with pytest.raises(Exception, match="inference_knn"):
        head.set_post(inference_knn=0)
    with pytest.raises(Exception, match="inference_knn"):
        GraphHead(3, inference_knn=0)


def test_stuff_threshold_sets_which_points_are_stuff():
    # every point scored LED with probability 0.3 (track 0.7): thing at stuff_threshold 0.5, stuff (−1, the
    # background class) at the default 0.2 (STUFF_THRESHOLD), as the mask head's stuff_threshold
    pos, label = _tracks()
    feat = torch.nn.functional.one_hot(torch.as_tensor(label), 3).float()
    head = _hand_head()
    with torch.no_grad():
        head.motif.bias.copy_(torch.tensor([-20.0, float(np.log(7 / 3)), -20.0, -20.0, 0.0]))
    assert head.post["stuff_threshold"] == 0.2
    pp = head.postprocess(head(feat, _point([pos])), background_class=5)
    assert (pp["instance"][0] == -1).all() and (pp["cls"][0] == 5).all()
    head.set_post(stuff_threshold=0.5)
    pp = head.postprocess(head(feat, _point([pos])), background_class=5)
    np.testing.assert_array_equal(_partition(pp["instance"][0].numpy()), _partition(label))
    with pytest.raises(Exception, match="stuff_threshold"):
        head.set_post(stuff_threshold=1.0)


def test_motif_context_is_the_mean_of_the_neighbours_within_the_radius():
    # points at x = 0, 2, 4 and 20 voxels (CONTEXT_RADIUS 3): 0-2 and 2-4 are neighbours, 0-4 and 20 are not
    from larpanda.tasks.graph_head import CONTEXT_RADIUS

    assert CONTEXT_RADIUS == 3.0
    pos = torch.tensor([[0.0, 0, 0], [2, 0, 0], [4, 0, 0], [20, 0, 0]])
    h = torch.tensor([[1.0], [2.0], [4.0], [8.0]])
    head = GraphHead(in_channels=3, hidden=1, motif_context=True)
    ctx = head._with_context(h, pos, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(ctx[:, 1], torch.tensor([2.0, 2.5, 2.0, 0.0]))
    torch.testing.assert_close(ctx[:, 2], torch.log1p(torch.tensor([1.0, 2.0, 1.0, 0.0])) / 4)
    # events of a batch are not neighbours of each other
    ctx = head._with_context(h, pos, torch.tensor([0, 1, 1, 1]))
    torch.testing.assert_close(ctx[:, 1], torch.tensor([0.0, 4.0, 2.0, 0.0]))
    assert head.motif[0].in_features == 3 and GraphHead(in_channels=3, hidden=1).motif.in_features == 1


class _LedFragments(nn.Module):  # as _SameLabelFragments, with a 6th node output: LED fragment (+10) for label 3
    def forward(self, x, e, edges):
        h = x[:, :4]
        logit = 10 - 20 * (h[edges[0]] - h[edges[1]]).abs().sum(1)
        node = torch.full((len(x), 6), -10.0)
        node[:, MUON] = 10.0
        node[:, 5] = torch.where(h[:, 3] > 0, 10.0, -10.0)
        return x, logit, node


def _tracks_and_blob():
    """`_tracks` and two LED blobs (label 3, two voxels and one) away from them, which every motif score calls
    track."""
    pos, label = _tracks()
    pos = np.concatenate([pos, np.array([(60, 60, 60), (60, 60, 61), (64, 60, 60)], np.float32)])
    label = np.concatenate([label, [3, 3, 3]])
    return pos, label, torch.nn.functional.one_hot(torch.as_tensor(label), 4).float()


def test_led_fragments_are_stuff_and_leave_the_particles_whole():
    pos, label, feat = _tracks_and_blob()
    head = _hand_head(k=4, led_fragments=True)
    head.fragment = _LedFragments()
    out = head(feat, _point([pos]))
    nf = len(out["fragment_size"])
    assert out["led_fragment_logits"].shape == (nf,) and int(out["fragment_edges"].max()) < nf
    assert len(out["thing"]) == len(out["fragment_of_thing"]) == (label < 3).sum()
    pp = head.postprocess(out, background_class=5)
    inst, cls = pp["instance"][0].numpy(), pp["cls"][0].numpy()
    assert (inst[label == 3] == -1).all() and (cls[label == 3] == 5).all()
    np.testing.assert_array_equal(_partition(inst[label < 3]), _partition(label[label < 3]))
    # the threshold is an inference setting: above the blob's probability it is a particle of its own
    assert head.set_post(led_fragment_threshold=0.99999)["led_fragment_threshold"] == 0.99999
    inst = head.postprocess(head(feat, _point([pos])), background_class=5)["instance"][0].numpy()
    np.testing.assert_array_equal(_partition(inst), _partition(label))


def test_led_fragments_train_on_the_led_points_the_motif_head_calls_thing():
    pos, label, feat = _tracks_and_blob()
    ids = torch.as_tensor(np.where(label == 3, -1, label)).long()
    truth = {"instance_particle": ids, "instance_interaction": ids.clamp(max=0),
             "segment_motif": torch.where(ids < 0, 4, 1), "segment_pid": torch.where(ids < 0, 5, MUON)}
    for level in ("particle", "interaction"):
        head = _hand_head(k=4, led_fragments=True, level=level).train()
        head.fragment = _LedFragments()
        if level == "interaction":
            head.particle = _NeverJoin()
        out = head(feat, _point([pos]), truth)
        # six fragments (A, B, the two pieces of C, the blobs), the blobs LED; no edge joins them to anything,
        # each other included
        assert out["led_fragment_target"].tolist() == [False] * 4 + [True] * 2
        touching = (out["fragment_edges"] >= 4).any(0)
        assert ((out["fragment_edges"] >= 4).all(0)).any() and not out["fragment_target"][touching].any()
        assert out["fragment_truth_size"][4:].tolist() == [2, 1]  # their own sizes, not all the LED of the event
        # the blob leaves the thing points before the particle stage
        assert len(out["thing"]) == (label < 3).sum() and (ids[out["thing"]] >= 0).all()
        assert len(out["particle_of_thing"]) == len(out["thing"])
        _, logs = head.loss(out)
        assert np.isfinite(logs["loss_led_fragment"])
    # without led_fragments, training sees the true thing points only
    head = _hand_head(k=4).train()
    head.fragment = _SameLabelFragments(4)
    out = head(feat, _point([pos]), truth)
    assert "led_fragment_target" not in out and len(out["thing"]) == (label < 3).sum()


def test_led_fragments_default_by_level_and_saved_heads_without_them_load():
    """On by default at the interaction level, off at the particle level (docs/benchmarks.md); the saved
    config holds the resolved value, and a head saved before the option (no key) is rebuilt without it."""
    from larpanda.tasks.panoptic import model_from_config

    assert GraphHead(3, level="interaction").led_fragments and not GraphHead(3, level="particle").led_fragments
    assert GraphHead(3, level="interaction").fragment.node_out.out_features == 6
    model = PanopticModel(load_config("tiny", "model"), level="interaction", mode="decoder", head="graph",
                          graph={"hidden": 8, "layers": 1, "led_fragments": False})
    cfg = model.config
    assert cfg["graph"]["led_fragments"] is False
    cfg["graph"].pop("led_fragments")
    again = model_from_config(cfg)
    again.load_state_dict(model.state_dict())
    assert not again.decoder.led_fragments
    on = PanopticModel(load_config("tiny", "model"), level="interaction", mode="decoder", head="graph",
                       graph={"hidden": 8, "layers": 1})
    assert on.config["graph"]["led_fragments"] is True
    model_from_config(on.config).load_state_dict(on.state_dict())
    # a point is stuff from an LED probability of 0.3 with LED fragments, 0.2 without (STUFF_THRESHOLD*)
    assert GraphHead(3, level="interaction").post["stuff_threshold"] == 0.3
    assert GraphHead(3, level="particle").post["stuff_threshold"] == 0.2
    assert GraphHead(3, level="interaction", led_fragments=False).post["stuff_threshold"] == 0.2
    assert GraphHead(3, level="interaction", stuff_threshold=0.25).post["stuff_threshold"] == 0.25
