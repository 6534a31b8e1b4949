// ilastik-web extension, part 3: the brush.
//
// Paint mode (button or P): a plain left-drag in a cross-section paints; the wheel still
// zooms and other buttons still pan. Ctrl+Shift+left-drag paints in any mode. Listeners run
// in the capture phase on window, so a painting drag never reaches Neuroglancer (no pan).
// Each mouse move reads the voxel under the cursor from the viewer's mouse state; the
// stroke is drawn at once on an overlay canvas over the panel in the class colour and
// posted on release. The overlay stroke is removed once the labels layer shows a version
// at least as new as the revision the server acknowledged for it.
(function () {
  "use strict";
  const IW = window.ilastikWeb;
  if (!IW || IW.reloading) return;
  const ng = IW.ng;

  const brush = (IW.brush = {
    paintMode: false,
    eraser: false,
    radius: 3, // voxels
    label: 1, // active class value
    color: "#ff0000",
    pending: [], // strokes drawn on the overlay: {points, radius, label, color, plane, revision}
    shownRevision: -1, // label revision the labels layer is known to draw
    onStroke: null, // async (stroke) => revision; set by the panel
    onChange: [],
  });

  function changed() {
    for (const fn of brush.onChange) fn();
  }
  brush.set = function (values) {
    Object.assign(brush, values);
    changed();
  };

  // --- overlay canvases, one per cross-section panel -----------------------------------

  const overlays = new Map(); // panel -> canvas
  function overlayOf(panel) {
    let canvas = overlays.get(panel);
    if (!canvas || !canvas.isConnected) {
      canvas = document.createElement("canvas");
      canvas.className = "iw-overlay";
      panel.element.appendChild(canvas);
      overlays.set(panel, canvas);
    }
    const dpr = window.devicePixelRatio || 1;
    const w = Math.round(panel.element.clientWidth * dpr);
    const h = Math.round(panel.element.clientHeight * dpr);
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    return canvas;
  }

  // The two voxel axes spanning each plane, as unit steps in (x, y, z).
  const PLANE_AXES = { xy: [[1, 0, 0], [0, 1, 0]], xz: [[1, 0, 0], [0, 0, 1]],
                       yz: [[0, 1, 0], [0, 0, 1]] };
  const NORMAL_INDEX = { xy: 2, xz: 1, yz: 0 };

  function add(p, step, r) {
    return [p[0] + step[0] * r, p[1] + step[1] * r, p[2] + step[2] * r];
  }

  /** Screen radii (rx, ry) of a brush of `radius` voxels at `point` in `panel`. */
  function screenRadii(panel, plane, point, radius) {
    const axes = PLANE_AXES[plane] || PLANE_AXES.xy;
    const c = ng.screenOf(panel, point);
    const a = ng.screenOf(panel, add(point, axes[0], radius));
    const b = ng.screenOf(panel, add(point, axes[1], radius));
    return [c, Math.hypot(a[0] - c[0], a[1] - c[1]), Math.hypot(b[0] - c[0], b[1] - c[1])];
  }

  function drawStroke(ctx, panel, stroke) {
    ctx.fillStyle = stroke.color;
    ctx.strokeStyle = stroke.color;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    let previous = null;
    for (const point of stroke.points) {
      const [c, rx, ry] = screenRadii(panel, stroke.plane, point, stroke.radius);
      ctx.beginPath();
      ctx.ellipse(c[0], c[1], Math.max(rx, 0.5), Math.max(ry, 0.5), 0, 0, 2 * Math.PI);
      ctx.fill();
      if (previous !== null) {
        ctx.lineWidth = 2 * Math.max(Math.min(rx, ry), 0.5);
        ctx.beginPath();
        ctx.moveTo(previous[0], previous[1]);
        ctx.lineTo(c[0], c[1]);
        ctx.stroke();
      }
      previous = c;
    }
  }

  let cursor = null; // {panel, clientX, clientY}
  let active = null; // the stroke being dragged: {panel, stroke}

  function render() {
    for (const panel of ng.panels()) {
      if (panel.sliceView === undefined) continue;
      const canvas = overlayOf(panel);
      const ctx = canvas.getContext("2d");
      const dpr = window.devicePixelRatio || 1;
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      const plane = ng.planeOf(panel);
      const center = ng.panelCenter(panel);
      ctx.globalAlpha = 0.75;
      const strokes = brush.pending.concat(active ? [active.stroke] : []);
      for (const stroke of strokes) {
        if (stroke.plane !== plane) continue;
        const n = NORMAL_INDEX[plane];
        // Flat strokes live on one slice (the first point's): show them on that slice only.
        if (n !== undefined && Math.floor(stroke.points[0][n]) !== Math.floor(center[n])) continue;
        drawStroke(ctx, panel, stroke);
      }
      ctx.globalAlpha = 1;
      if (cursor && cursor.panel === panel && (brush.paintMode || cursor.modifier)) {
        const rect = panel.element.getBoundingClientRect();
        let x = cursor.clientX - rect.left;
        let y = cursor.clientY - rect.top;
        const point = cursor.voxel;
        let rx = 4;
        let ry = 4;
        // Centred where the paint lands (the voxel position the stroke records, drawn the
        // way strokes are), not at the raw mouse pixel, which sits ~1.5 px off it.
        if (point) {
          let c;
          [c, rx, ry] = screenRadii(panel, plane, point, brush.radius);
          [x, y] = c;
        }
        brush.cursorDrawn = { panel, x, y, rx, ry };
        ctx.lineWidth = 1.5;
        ctx.strokeStyle = brush.eraser ? "#ffffff" : brush.color;
        ctx.setLineDash(brush.eraser ? [4, 3] : []);
        ctx.beginPath();
        ctx.ellipse(x, y, Math.max(rx, 1), Math.max(ry, 1), 0, 0, 2 * Math.PI);
        ctx.stroke();
        ctx.setLineDash([]);
      }
    }
  }

  function frame() {
    try {
      render();
    } catch (e) {
      console.warn("ilastik-web: overlay drawing failed", e);
    }
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);

  // --- removing strokes once the server's labels show them -----------------------------

  function labelRevisionShown() {
    const layerId = IW.labelsLayerId;
    if (!layerId) return -1;
    const managed = ng.layerServing(layerId);
    if (!managed || !managed.layer || managed.layer.dataSources.length !== 1) return -1;
    const source = managed.layer.dataSources[0];
    const match = /\/r(\d+)-[0-9a-f]+(?:-outline)?\/?$/.exec(source.spec.url || "");
    if (!match || !source.loadState || source.loadState.error !== undefined) return -1;
    return ng.layerDrawn(managed.layer) ? Number(match[1]) : -1;
  }

  setInterval(() => {
    if (brush.pending.length === 0) return;
    const shown = labelRevisionShown();
    if (shown > brush.shownRevision) brush.shownRevision = shown;
    brush.pending = brush.pending.filter(
      (s) => s.revision === null || s.revision > brush.shownRevision || s.failed);
    // A failed stroke stays visible briefly (outlined by the status line), then goes.
    brush.pending = brush.pending.filter((s) => !s.failed || Date.now() - s.failed < 3000);
  }, 100);

  // --- mouse handling --------------------------------------------------------------------

  function isPaintStart(event) {
    if (event.button !== 0) return false;
    if (event.ctrlKey && event.shiftKey && !event.altKey) return true;
    return brush.paintMode && !event.ctrlKey && !event.shiftKey && !event.altKey && !event.metaKey;
  }

  function addPoint(stroke, point) {
    const last = stroke.points[stroke.points.length - 1];
    if (last && Math.hypot(point[0] - last[0], point[1] - last[1], point[2] - last[2]) < 0.25) {
      return;
    }
    stroke.points.push(point);
  }

  window.addEventListener("mousedown", (event) => {
    const panel = ng.slicePanelOf(event.target);
    if (!panel || !isPaintStart(event)) return;
    event.stopPropagation();
    event.preventDefault();
    const plane = ng.planeOf(panel);
    const point = ng.voxelAt(panel, event.clientX, event.clientY);
    if (!point) return;
    const label = brush.eraser ? 0 : brush.label;
    active = {
      panel,
      stroke: { points: [point], radius: brush.radius, label, plane, revision: null,
                color: brush.eraser ? "rgba(255,255,255,0.9)" : brush.color },
    };
  }, true);

  window.addEventListener("mousemove", (event) => {
    const panel = ng.slicePanelOf(event.target);
    const modifier = event.ctrlKey && event.shiftKey;
    if (active) {
      event.stopPropagation();
      const point = ng.voxelAt(active.panel, event.clientX, event.clientY);
      if (point) addPoint(active.stroke, point);
      cursor = { panel: active.panel, clientX: event.clientX, clientY: event.clientY,
                 voxel: point, modifier };
      return;
    }
    if (panel && (brush.paintMode || modifier)) {
      const voxel = ng.voxelAt(panel, event.clientX, event.clientY);
      cursor = { panel, clientX: event.clientX, clientY: event.clientY, voxel, modifier };
    } else {
      cursor = null;
    }
  }, true);

  window.addEventListener("mouseup", (event) => {
    if (!active || event.button !== 0) return;
    event.stopPropagation();
    event.preventDefault();
    const stroke = active.stroke;
    active = null;
    brush.pending.push(stroke);
    if (!brush.onStroke) return;
    brush.onStroke(stroke).then(
      (revision) => {
        // No change (e.g. erasing nothing): nothing will be drawn, drop it now.
        stroke.revision = revision === null ? -1 : revision;
        if (revision === null) brush.pending = brush.pending.filter((s) => s !== stroke);
      },
      () => {
        stroke.failed = Date.now();
      });
  }, true);

  // Clicks that ended a painting drag must not reach Neuroglancer either.
  window.addEventListener("click", (event) => {
    if (ng.slicePanelOf(event.target) && isPaintStart(event)) event.stopPropagation();
  }, true);
})();
