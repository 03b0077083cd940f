"""Exact incremental recompute of any local network, traced to ATen operations.

An intervention changes the input only inside its block. Through a local operation (convolution of
any kernel, stride and dilation, transposed convolution, pixel (un)shuffle, integer-factor
upsampling, pads and crops, elementwise layers, residual adds and multiplies, channel
concatenation), a change confined to a window of the inputs is confined to a computable window of
the output (:mod:`cem_lab.causal.window_rules`). So the network is traced once
(``make_fx``, functionalised, so in-place layers are pure), run once on the un-intervened crop with
every node's value kept, and an intervened item then recomputes each node only on its window, from
its inputs' windows pasted into their cached un-intervened values. The ROI keeps its un-intervened
output wherever the last window does not reach.

Windows are planned for every block at once (:meth:`LocalGraph.plan`), with one size per node for
all blocks (a window is moved inside the tensor rather than cut at its edge; a larger window is as
exact), so items batch into one shape per node whatever their block. A node whose window covers its
whole output is no longer tracked: it and what follows run on whole tensors, and so may be any
operation. An operation without a rule that is reached by a partial window (a global pooling, an
attention, a reshape) ends it: :class:`NotLocal` names the node and the line of the model's code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, fx, nn

from cem_lab.causal.memory import available_bytes
from cem_lab.causal.window_rules import ConvRule, Rule, rule_for


class NotLocal(ValueError):
    """The model has an operation that incremental recompute cannot follow (named in the message)."""


def trace(model: nn.Module, x: Tensor) -> fx.GraphModule:
    """``model`` as a graph of ATen operations, traced on ``x`` (control flow follows ``x``)."""
    from torch.func import functionalize
    from torch.fx.experimental.proxy_tensor import make_fx

    try:
        with torch.no_grad():
            return make_fx(functionalize(model), record_stack_traces=True)(x)
    except Exception as e:  # noqa: BLE001 - any failure to trace means: not followed, say why
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise NotLocal(f"it could not be traced to ATen operations ({type(e).__name__}: {first})") from None


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in [^\n]*\n\s*([^\n]*)')


def where(node: fx.Node) -> str:
    """The line of the model's own code that made ``node`` (the last frame outside torch)."""
    frames = _FRAME.findall(node.meta.get("stack_trace", "") or "")
    own = [f for f in frames if "/torch/" not in f[0] and "/cem_lab/causal/" not in f[0]]
    if not own:
        return node.name
    path, line, code = own[-1]
    return f"{path.rsplit('/', 1)[-1]}:{line} `{code.strip()}`"


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _cache_bytes(graph: fx.Graph) -> int:
    """Bytes of every intermediate value of ``graph`` (from the shapes recorded when it was traced)."""
    total = 0
    for n in graph.nodes:
        vals = n.meta.get("val")
        for v in vals if isinstance(vals, (tuple, list)) else [vals]:
            if isinstance(v, Tensor):
                total += v.numel() * v.element_size()
    return total


def _nodes_in(arg) -> list[fx.Node]:
    if isinstance(arg, fx.Node):
        return [arg]
    if isinstance(arg, (list, tuple)):
        return [n for a in arg for n in _nodes_in(a)]
    return []


def _extent(v) -> tuple[int, int] | None:
    if isinstance(v, (tuple, list)):
        v = v[0] if v else None
    return tuple(v.shape[-2:]) if isinstance(v, Tensor) and v.dim() == 4 else None


def _fit(lo: np.ndarray, hi: np.ndarray, size: int, inside: bool) -> tuple[np.ndarray, np.ndarray]:
    """One length for every row: the longest span (at most ``size`` when kept ``inside`` the tensor,
    where spans are moved in rather than cut)."""
    n = int((hi - lo).max())
    if inside:
        n = min(n, size)
        lo = np.clip(lo, 0, size - n)
    return lo, lo + n


@dataclass
class NodePlan:
    """Where one node is recomputed for every block: its window (B, 4) in its own pixels, the
    spans of its spatial inputs (B, 4) and where its window starts in what the op returns."""

    window: np.ndarray
    full: bool
    needs: dict[fx.Node, np.ndarray]
    offset: np.ndarray  # (B, 2): window start minus the first computed element, per axis


class LocalGraph:
    """A traced network, its un-intervened values on one crop, and intervened ROI outputs computed
    window by window.

    ``base``: the un-intervened crop (1, C, H, W); ``roi``: (y0, y1, x0, x1) in the pixels of the
    model's output on that crop."""

    def __init__(self, model: nn.Module, base: Tensor, roi: tuple[int, int, int, int]):
        self.gm = trace(model, base)
        graph = self.gm.graph
        inputs = [n for n in graph.nodes if n.op == "placeholder"]
        if len(inputs) != 1:
            raise NotLocal(f"its traced graph has {len(inputs)} inputs")
        self.input = inputs[0]
        self.cache_bytes = _cache_bytes(graph)
        free = available_bytes(base.device)
        if free is not None and self.cache_bytes > free // 4:
            raise NotLocal(
                f"its {len(graph.nodes)} intermediate maps on this crop need {_size(self.cache_bytes)}, more than a "
                f"quarter of the {_size(free)} free"
            )
        # shapes first (the trace's own record of every value): rules, demand, plan and the work share need
        # no more, so a network with nothing to save is declined before the run that keeps every map
        self._base = base
        self.values = self._traced_values(graph)
        self.materialized = self.values is None
        if self.values is None:
            self.values = self._run(base)
        (out,) = [n for n in graph.nodes if n.op == "output"]
        res = out.args[0]
        while isinstance(res, (tuple, list)):
            res = res[0]
        if not isinstance(res, fx.Node) or _extent(self.values[res]) is None:
            raise NotLocal("its output is not an image")
        self.out = res
        self.roi = roi
        ahead = {self.input}
        for n in graph.nodes:
            if n.op == "call_function" and any(a in ahead for a in _nodes_in((n.args, n.kwargs))):
                ahead.add(n)
        behind = {res}
        for n in reversed(list(graph.nodes)):
            if n in behind:
                behind.update(_nodes_in((n.args, n.kwargs)))
        self.tainted = (ahead & behind) - {self.input}
        self.order = [n for n in graph.nodes if n in self.tainted]
        if res not in self.tainted:
            raise NotLocal("its output does not depend on its input")
        self.rules: dict[fx.Node, Rule | str] = {
            n: rule_for(n, self.values, self.tainted | {self.input}) for n in self.order
        }
        self.users = {n: [u for u in n.users if u in self.tainted] for n in [self.input, *self.order]}
        self._canvas: dict[tuple, Tensor] = {}
        self.plans: dict[fx.Node, NodePlan] = {}
        self._program: list[_Step] | None = None

    @staticmethod
    def _traced_values(graph: fx.Graph) -> dict[fx.Node, object] | None:
        """Every node's value as the trace recorded it (fake tensors: shapes and dtypes, no data), or None
        when a node has no record."""
        vals: dict[fx.Node, object] = {}
        for n in graph.nodes:
            if n.op == "output":
                continue
            if "val" not in n.meta:
                return None
            vals[n] = n.meta["val"]
        return vals

    def materialize(self) -> None:
        """Run the graph once on the un-intervened crop and keep every value (what recompute reads)."""
        if not self.materialized:
            self.values = self._run(self._base)
            self.materialized = True
            self._canvas.clear()
            self._program = None

    def _run(self, x: Tensor) -> dict[fx.Node, object]:
        values: dict[fx.Node, object] = {}

        class Keep(fx.Interpreter):
            def run_node(self, n):
                values[n] = super().run_node(n)
                return values[n]

        with torch.inference_mode():
            Keep(self.gm).run(x)
        return values

    # ------------------------------------------------------------------ planning
    def demand(self) -> dict[fx.Node, np.ndarray | None]:
        """Per node, the box (y0, y1, x0, x1) of its values that the ROI output can read, None where it may read
        all of them. Walked back from the ROI: a node's inputs are needed where the rule reads them to compute
        its own demanded box; an operation without a rule, or not on an image, reads its inputs whole.

        A window need only be exact inside its node's demand: an intervention's change outside it never
        reaches the ROI. So late layers recompute the change's window cut to the ROI grown by the reach left,
        not the whole change (the far side of a block's change, which no ROI pixel reads)."""
        y0, y1, x0, x1 = self.roi
        dem: dict[fx.Node, np.ndarray | None] = {self.out: np.array([y0, y1, x0, x1], dtype=np.int64)}

        def add(src: fx.Node, box: np.ndarray | None) -> None:
            if src is not self.input and src not in self.tainted:
                return
            if box is None or _extent(self.values[src]) is None:
                dem[src] = None
            elif src not in dem:
                dem[src] = box
            elif dem[src] is not None:
                old = dem[src]
                dem[src] = np.array(
                    [min(old[0], box[0]), max(old[1], box[1]), min(old[2], box[2]), max(old[3], box[3])]
                )

        for n in reversed(self.order):
            box = dem.get(n)
            rule = self.rules[n]
            srcs = _nodes_in((n.args, n.kwargs))
            if isinstance(rule, Rule) and rule.kind == "getitem":
                for src in srcs:
                    add(src, box)
                continue
            if box is None or isinstance(rule, str) or _extent(self.values[n]) is None:
                for src in srcs:
                    add(src, None)
                continue
            spatial = list(n.args[0]) if rule.kind == "cat" else [n.args[i] for i in rule.spatial_args]
            spatial = [a for a in spatial if isinstance(a, fx.Node)]
            for src in srcs:
                if src not in spatial:
                    add(src, None)
                    continue
                sext = _extent(self.values[src])
                if sext is None:
                    add(src, None)
                    continue
                need = []
                for axis in (0, 1):
                    lo, hi = rule.need((box[2 * axis : 2 * axis + 1], box[2 * axis + 1 : 2 * axis + 2]), axis)
                    need += [max(0, int(lo[0])), min(sext[axis], int(hi[0]))]
                add(src, np.array(need, dtype=np.int64))
        return dem

    def plan(self, boxes: np.ndarray) -> None:
        """Plan every node's window for interventions inside ``boxes`` (B, 4: y0, y1, x0, x1 of the
        crop); raises :class:`NotLocal` at the first operation a partial window reaches that has no
        rule."""
        boxes = np.asarray(boxes, dtype=np.int64)
        h, w = self.values[self.input].shape[-2:]
        win = {
            self.input: np.stack(
                [*_fit(boxes[:, 0], boxes[:, 1], h, True), *_fit(boxes[:, 2], boxes[:, 3], w, True)], 1
            )
        }
        full = {self.input: False}
        plans: dict[fx.Node, NodePlan] = {}
        demand = self.demand()
        for n in self.order:
            rule = self.rules[n]
            srcs = [a for a in _nodes_in((n.args, n.kwargs)) if a is self.input or a in self.tainted]
            ext = _extent(self.values[n])
            if isinstance(rule, Rule) and rule.kind == "getitem":
                win[n], full[n] = win[srcs[0]], full[srcs[0]]
                plans[n] = NodePlan(win[n], full[n], {}, np.zeros((len(boxes), 2), np.int64))
                continue
            if all(full[s] for s in srcs) or ext is None:
                if not all(full[s] for s in srcs):
                    raise NotLocal(f"{n.target} at {where(n)} does not return an image")
                whole = np.tile(np.array([0, ext[0], 0, ext[1]] if ext else [0, 0, 0, 0]), (len(boxes), 1))
                win[n], full[n] = whole, True
                plans[n] = NodePlan(whole, True, {}, np.zeros((len(boxes), 2), np.int64))
                continue
            if isinstance(rule, str):
                raise NotLocal(f"{rule} at {where(n)}")
            if rule.kind == "cat":
                spatial = list(n.args[0])
            else:
                spatial = [n.args[i] for i in rule.spatial_args if isinstance(n.args[i], fx.Node)]
            changed = [s for s in spatial if s in win]
            cols = []
            box = demand.get(n)
            for axis in (0, 1):
                spans = [(win[s][:, 2 * axis], win[s][:, 2 * axis + 1]) for s in changed]
                lo, hi = rule.changed(spans, axis)
                lo, hi = np.maximum(lo, 0), np.minimum(hi, ext[axis])
                if box is not None:  # exact only where the ROI reads (a change elsewhere never reaches it)
                    lo, hi = np.maximum(lo, box[2 * axis]), np.minimum(hi, box[2 * axis + 1])
                    empty = hi <= lo  # this change does not reach the ROI through here: any 1-pixel window
                    lo, hi = np.where(empty, box[2 * axis], lo), np.where(empty, box[2 * axis] + 1, hi)
                cols += list(_fit(lo, hi, ext[axis], True))
            window = np.stack(cols, 1)
            is_full = bool(
                (window[:, 0] == 0).all()
                and (window[:, 1] == ext[0]).all()
                and (window[:, 2] == 0).all()
                and (window[:, 3] == ext[1]).all()
            )
            needs, offset = {}, np.zeros((len(boxes), 2), np.int64)
            for s in spatial:
                sext = _extent(self.values[s])
                ncols = []
                for axis in (0, 1):
                    lo, hi = rule.need((window[:, 2 * axis], window[:, 2 * axis + 1]), axis)
                    lo, hi = _fit(lo, hi, sext[axis], rule.fill is None)
                    ncols += [lo, hi]
                    offset[:, axis] = window[:, 2 * axis] - rule.origin((lo, hi), axis)
                needs[s] = np.stack(ncols, 1)
            win[n], full[n] = window, is_full
            plans[n] = NodePlan(window, is_full, needs, offset)
        self.plans = plans
        self._canvas.clear()
        self._program = None

    def work(self, per_block: bool = False):
        """Convolution work of the plan relative to the whole crop (multiply-adds, averaged over
        blocks), and the input pixels an item pushes through a convolution, on average."""
        done = whole = pixels = 0.0
        convs = 0
        for n in self.order:
            rule, p = self.rules[n], self.plans.get(n)
            if not isinstance(rule, ConvRule) or p is None:
                continue
            wt = self.values[n.args[1]]
            per_px = wt[0].numel() * wt.shape[0]
            out_h, out_w = _extent(self.values[n])
            size = (p.window[0, 1] - p.window[0, 0]) * (p.window[0, 3] - p.window[0, 2])
            need = p.needs.get(n.args[0])
            done += per_px * size
            whole += per_px * out_h * out_w
            pixels += 0 if need is None else (need[0, 1] - need[0, 0]) * (need[0, 3] - need[0, 2])
            convs += 1
        return (done / whole if whole else 1.0), (pixels / convs if convs else 0.0)

    # ------------------------------------------------------------------ execution
    def _padded(self, node: fx.Node, fill: float, margin: int) -> Tensor:
        key = (node, fill, margin)
        if key not in self._canvas:
            v = self.values[node]
            self._canvas[key] = torch.nn.functional.pad(v, (margin,) * 4, value=fill) if margin else v
        return self._canvas[key]

    def _compile(self) -> list[_Step]:
        """The plan as a list of steps, everything that does not depend on the items worked out once: each
        gathered input's margin (over every block), where its own window sits in what is gathered, the
        operation's arguments with the constant ones filled in, and the values freed after the step."""
        left = {n: len(self.users[n]) for n in self.users}
        steps = []
        for n in self.order:
            p, rule = self.plans[n], self.rules[n]
            if isinstance(rule, Rule) and rule.kind == "getitem":
                kind = "getitem"
            elif p.full and not p.needs:
                kind = "whole"
            else:
                kind = "window"
            sources = []
            for s, need in p.needs.items() if kind == "window" else ():
                h, w = _extent(self.values[s])
                m = int(max(0, -need[:, 0].min(), -need[:, 2].min(), need[:, 1].max() - h, need[:, 3].max() - w))
                own = s is self.input or (s in self.plans and self.plans[s].full)
                at, exact = None, False
                if not own and s in self.tainted:
                    at = self.plans[s].window - need[:, [0, 0, 2, 2]]
                    exact = bool((need == self.plans[s].window).all())  # e.g. a pointwise layer after a convolution
                sources.append(_Source(s, need + m, m, own, at, exact))
            gathered = {src.node for src in sources}
            step = _Step(n, kind, rule, p, sources)
            if kind != "getitem":
                step.args, step.kwargs, step.slots = self._template(n, gathered)
                size = p.window[0, [1, 3]] - p.window[0, [0, 2]]
                step.size = (int(size[0]), int(size[1]))
            for s in _nodes_in((n.args, n.kwargs)):
                if s in left:
                    left[s] -= 1
                    if left[s] == 0 and s is not self.out:
                        step.free.append(s)
            steps.append(step)
        return steps

    def _template(self, n: fx.Node, gathered: set):
        """``n``'s arguments with every value that is the same for all items filled in, and the places
        (argument index, or keyword) of those read per call: a gathered span, an intervened value, the
        input."""
        slots: list[tuple[object, fx.Node]] = []

        def const(a):
            return self.values[a]

        def fill(key, a):
            if isinstance(a, fx.Node):
                if a in gathered or a is self.input or a in self.tainted:
                    slots.append((key, a))
                    return None
                return const(a)
            if isinstance(a, (list, tuple)) and _nodes_in(a):
                if any(x in gathered or x is self.input or x in self.tainted for x in _nodes_in(a)):
                    slots.append((key, a))  # a list with per-item values (a concatenation): mapped per call
                    return None
                return _map(a, const)
            return a

        args = [fill(i, a) for i, a in enumerate(n.args)]
        kwargs = {k: fill(k, a) for k, a in n.kwargs.items()}
        return args, kwargs, slots

    def roi_outputs(self, x: Tensor, rows: Sequence[int]) -> Tensor:
        """ROI outputs of intervened crops ``x`` (N, C, H, W); item i is planned as block row ``rows[i]``."""
        self.materialize()
        if self._program is None:
            self._program = self._compile()
        rows = np.asarray(rows)
        one = bool((rows == rows[0]).all())  # every item on one block: every span the same
        r0 = rows[:1] if one else rows
        vals: dict[fx.Node, object] = {}
        with torch.inference_mode():
            for st in self._program:
                n = st.node
                if st.kind == "getitem":
                    vals[n] = vals[n.args[0]][n.args[1]]
                else:
                    got = {src.node: self._gather(src, r0, len(rows), st.rule.fill, x, vals) for src in st.sources}

                    def val(a, got=got):
                        if a in got:
                            return got[a]
                        if a is self.input:
                            return x
                        return vals[a] if a in vals else self.values[a]

                    args, kwargs = list(st.args), dict(st.kwargs)
                    for key, a in st.slots:
                        v = val(a) if isinstance(a, fx.Node) else _map(a, val)
                        if isinstance(key, int):
                            args[key] = v
                        else:
                            kwargs[key] = v
                    if st.kind == "whole":
                        vals[n] = n.target(*args, **kwargs)
                    else:
                        res = st.rule.run(n.target, args, kwargs)
                        vals[n] = _crop(res, st.plan.offset[r0], st.size)
                for s in st.free:
                    vals.pop(s, None)
            y0, y1, x0, x1 = self.roi
            out = self.values[self.out][:, :, y0:y1, x0:x1].expand(len(rows), -1, -1, -1)
            at = self.plans[self.out].window[r0] - np.array([y0, y0, x0, x0])
            return _paste(out, vals[self.out], at).contiguous()

    def _gather(self, src: _Source, rows: np.ndarray, count: int, fill: float | None, x: Tensor, vals: dict):
        """``src`` on its spans for each item: the item's own values where it changed them, the un-intervened
        ones elsewhere, ``fill`` outside the tensor. ``rows``: the items' block rows, or one row when every item
        is on that block (``count`` items)."""
        if src.exact:
            return vals[src.node]
        spans, m = src.spans[rows], src.margin
        fill = 0.0 if fill is None else fill
        if src.own:
            own = x if src.node is self.input else vals[src.node]
            canvas = torch.nn.functional.pad(own, (m,) * 4, value=fill) if m else own
            return _cut(canvas, spans, per_item=True, count=count)
        out = _cut(self._padded(src.node, fill, m), spans, per_item=False, count=count)
        if src.at is not None:
            return _paste(out, vals[src.node], src.at[rows])
        return out


@dataclass
class _Source:
    """An input of a windowed step: its spans (B, 4) in its canvas padded by ``margin``, whether it is read
    from the items' own tensors (the input, or a node no longer tracked), and where a tracked node's own window
    sits in its span (None: an un-intervened value, read from the cache alone); ``exact``: the spans are that
    node's own windows, so its values are the input as they are."""

    node: fx.Node
    spans: np.ndarray
    margin: int
    own: bool
    at: np.ndarray | None
    exact: bool = False


@dataclass
class _Step:
    """One node of the compiled plan (:meth:`LocalGraph._compile`)."""

    node: fx.Node
    kind: str  # "getitem", "whole" (on whole tensors) or "window"
    rule: Rule | str
    plan: NodePlan
    sources: list[_Source]
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    slots: list = field(default_factory=list)
    size: tuple[int, int] = (0, 0)
    free: list = field(default_factory=list)


def _map(tree, fn):
    if isinstance(tree, fx.Node):
        return fn(tree)
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map(t, fn) for t in tree)
    if isinstance(tree, dict):
        return {k: _map(v, fn) for k, v in tree.items()}
    return tree


def _take(t: Tensor, ys: np.ndarray, xs: np.ndarray, h: int, w: int) -> Tensor:
    """``t[i or 0, :, ys[i]:ys[i]+h, xs[i]:xs[i]+w]`` for every i, as one (N, C, h, w) tensor (slices
    and one stack: faster here than indexing a sliding-window view at the batch sizes used)."""
    one = t.shape[0] == 1
    return torch.stack(
        [t[0 if one else i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(zip(ys.tolist(), xs.tolist()))]
    )


def _cut(canvas: Tensor, spans: np.ndarray, per_item: bool, count: int | None = None) -> Tensor:
    """``canvas[i or 0, :, y0:y1, x0:x1]`` over the rows of ``spans`` (all one size), ``count`` items (default
    one per row; a single row stands for every item); a view where every row is the same span of one
    canvas."""
    y0, y1, x0, x1 = spans[0].tolist()
    count = len(spans) if count is None else count
    if len(spans) == 1 or (spans == spans[0]).all():
        part = canvas[:, :, y0:y1, x0:x1]
        return part if per_item else part.expand(count, -1, -1, -1)
    return _take(canvas if per_item else canvas[:1], spans[:, 0], spans[:, 2], y1 - y0, x1 - x0)


def _paste(dst: Tensor, src: Tensor, at: np.ndarray) -> Tensor:
    """``dst`` with ``src[i]`` written over ``dst[i]`` with its corner at ``at[i]`` (rows of y0, y1, x0,
    x1 relative to ``dst``), the part that falls inside ``dst``; a new tensor (``dst`` may be a view)."""
    hd, wd = dst.shape[-2:]
    h, w = src.shape[-2:]
    oy, ox = at[:, 0], at[:, 2]
    if len(at) == 1 or ((oy == oy[0]).all() and (ox == ox[0]).all()):
        a, b = int(oy[0]), int(ox[0])
        y0, x0, y1, x1 = max(0, -a), max(0, -b), min(h, hd - a), min(w, wd - b)
        if y0 == 0 and x0 == 0 and y1 - y0 == hd and x1 - x0 == wd and a == 0 and b == 0:
            return src if (h, w) == (hd, wd) else src[:, :, :hd, :wd]
        out = dst.clone(memory_format=torch.contiguous_format)
        if y0 < y1 and x0 < x1:
            out[:, :, a + y0 : a + y1, b + x0 : b + x1] = src[:, :, y0:y1, x0:x1]
        return out
    out = dst.clone(memory_format=torch.contiguous_format)
    for i, (a, b) in enumerate(zip(oy.tolist(), ox.tolist())):  # offsets differ per item
        y0, x0, y1, x1 = max(0, -a), max(0, -b), min(h, hd - a), min(w, wd - b)
        if y0 < y1 and x0 < x1:
            out[i, :, a + y0 : a + y1, b + x0 : b + x1] = src[i, :, y0:y1, x0:x1]
    return out


def _crop(res, offset: np.ndarray, size: np.ndarray):
    """The window (``size`` from ``offset`` per item) of what an operation returned (each image of a
    tuple)."""
    if isinstance(res, (tuple, list)):
        return type(res)(_crop(r, offset, size) if isinstance(r, Tensor) and r.dim() == 4 else r for r in res)
    hh, ww = int(size[0]), int(size[1])
    if len(offset) == 1 or (offset == offset[0]).all():
        oy, ox = offset[0].tolist()
        if oy == 0 and ox == 0 and res.shape[-2] == hh and res.shape[-1] == ww:
            return res
        return res[:, :, oy : oy + hh, ox : ox + ww]
    return _take(res, offset[:, 0], offset[:, 1], hh, ww)
