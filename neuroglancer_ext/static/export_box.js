// ilastik-web extension: draw the export region as a box in the viewer.
//
// "Draw region" (next to the Jobs section's region field) arms box mode: the next left-drag
// in a cross-section sets the box's extent along that panel's two axes (the third keeps its
// range, at first the whole volume; drag in another panel to narrow it). The box is drawn in
// every cross-section that cuts it, and written into the region field as z0:z1,y0:y1,x0:x1
// (voxels of level 0), which the export then uses. Esc leaves box mode; "Clear" removes it.
(function () {
  "use strict";
  const IW = window.ilastikWeb;
  if (!IW || IW.reloading || !IW.panel) return;
  const ng = IW.ng;
  const { el, prefix } = IW.panel;
  const AXES = { xy: [0, 1], xz: [0, 2], yz: [1, 2] }; // in-plane axes, x=0 y=1 z=2

  const box = (IW.exportBox = { armed: false, start: null, stop: null, shape: null });
  const drawButton = el("button", { id: "iw-box-draw", class: "iw-toggle",
                                    title: "Drag a box in a cross-section (Esc: stop)",
                                    onclick: () => arm(!box.armed) }, "Draw region");
  const clearButton = el("button", { id: "iw-box-clear", title: "Export everything",
                                     onclick: () => clear() }, "Clear");

  function roiInput() {
    return document.getElementById("iw-job-roi");
  }

  function attach() {
    const input = roiInput();
    if (!input || drawButton.isConnected) return;
    input.parentNode.append(drawButton, clearButton);
    input.addEventListener("change", () => parseInput(input.value));
  }

  async function loadShape() {
    try {
      const response = await fetch(prefix + "/api/sources");
      const data = await response.json();
      const source = (data.sources || [])[0];
      if (source) {
        const [z, y, x] = source.shape_zyx;
        box.shape = [x, y, z];
      }
    } catch (e) {
      // without a shape the box is not clipped; the server checks the region anyway
    }
  }

  function arm(on) {
    box.armed = on;
    drawButton.classList.toggle("iw-on", on);
    document.body.classList.toggle("iw-box-mode", on);
    if (on && IW.brush.paintMode) IW.brush.set({ paintMode: false });
    if (on && IW.sam && IW.sam.mode) IW.sam.setMode(false);
  }

  function writeInput() {
    const input = roiInput();
    if (!input || !box.start) return;
    const [x0, y0, z0] = box.start;
    const [x1, y1, z1] = box.stop;
    input.value = `${z0}:${z1},${y0}:${y1},${x0}:${x1}`;
    input.dispatchEvent(new Event("input"));
  }

  function parseInput(text) {
    const m = /^\s*(\d+):(\d+),(\d+):(\d+),(\d+):(\d+)\s*$/.exec(text || "");
    if (!m) {
      if (!text || !text.trim()) box.start = box.stop = null;
      return;
    }
    const v = m.slice(1).map(Number);
    box.start = [v[4], v[2], v[0]];
    box.stop = [v[5], v[3], v[1]];
  }

  function clear() {
    box.start = box.stop = null;
    const input = roiInput();
    if (input) input.value = "";
    arm(false);
  }

  function fullBox() {
    const shape = box.shape || [1, 1, 1];
    return [[0, 0, 0], shape.slice()];
  }

  let drag = null; // {panel, plane, from}
  function setFromDrag(to) {
    const [a, b] = AXES[drag.plane];
    const [start, stop] = box.start ? [box.start.slice(), box.stop.slice()] : fullBox();
    for (const axis of [a, b]) {
      // the voxels under both ends are inside
      let lo = Math.floor(Math.min(drag.from[axis], to[axis]));
      let hi = Math.floor(Math.max(drag.from[axis], to[axis])) + 1;
      if (box.shape) {
        lo = Math.max(0, Math.min(lo, box.shape[axis] - 1));
        hi = Math.max(lo + 1, Math.min(hi, box.shape[axis]));
      }
      start[axis] = lo;
      stop[axis] = hi;
    }
    box.start = start;
    box.stop = stop;
    writeInput();
  }

  window.addEventListener("mousedown", (event) => {
    if (!box.armed || event.button !== 0) return;
    const panel = ng.slicePanelOf(event.target);
    if (!panel) return;
    const plane = ng.planeOf(panel);
    const from = ng.voxelAt(panel, event.clientX, event.clientY);
    if (!from || !AXES[plane]) return;
    event.stopPropagation();
    event.preventDefault();
    drag = { panel, plane, from };
  }, true);
  window.addEventListener("mousemove", (event) => {
    if (!drag) return;
    event.stopPropagation();
    const to = ng.voxelAt(drag.panel, event.clientX, event.clientY);
    if (to) setFromDrag(to);
  }, true);
  window.addEventListener("mouseup", (event) => {
    if (!drag || event.button !== 0) return;
    event.stopPropagation();
    event.preventDefault();
    const to = ng.voxelAt(drag.panel, event.clientX, event.clientY);
    if (to) setFromDrag(to);
    drag = null;
    arm(false);
  }, true);
  window.addEventListener("click", (event) => {
    if (box.armed && ng.slicePanelOf(event.target)) event.stopPropagation();
  }, true);
  window.addEventListener("keydown", (event) => {
    if (box.armed && event.key === "Escape") {
      arm(false);
      event.stopPropagation();
    }
  }, true);

  // --- drawing -----------------------------------------------------------------------------

  const canvases = new Map();
  function canvasOf(panel) {
    let canvas = canvases.get(panel);
    if (!canvas || !canvas.isConnected) {
      canvas = document.createElement("canvas");
      canvas.className = "iw-box-overlay";
      panel.element.appendChild(canvas);
      canvases.set(panel, canvas);
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

  function render() {
    for (const panel of ng.panels()) {
      if (panel.sliceView === undefined) continue;
      const canvas = canvasOf(panel);
      const ctx = canvas.getContext("2d");
      const dpr = window.devicePixelRatio || 1;
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      const plane = ng.planeOf(panel);
      if (!box.start || !AXES[plane]) continue;
      const normal = 3 - AXES[plane][0] - AXES[plane][1];
      const center = ng.panelCenter(panel);
      if (center[normal] < box.start[normal] || center[normal] >= box.stop[normal]) continue;
      const [a, b] = AXES[plane];
      const corner = (u, v) => {
        const p = center.slice();
        p[a] = u;
        p[b] = v;
        return ng.screenOf(panel, p);
      };
      const p0 = corner(box.start[a], box.start[b]);
      const p1 = corner(box.stop[a], box.stop[b]);
      ctx.strokeStyle = "#ffd54f";
      ctx.lineWidth = 2;
      ctx.setLineDash([6, 4]);
      ctx.strokeRect(Math.min(p0[0], p1[0]), Math.min(p0[1], p1[1]),
                     Math.abs(p1[0] - p0[0]), Math.abs(p1[1] - p0[1]));
      ctx.setLineDash([]);
    }
  }
  function frame() {
    try {
      render();
    } catch (e) {
      console.warn("ilastik-web: drawing the export box failed", e);
    }
    requestAnimationFrame(frame);
  }

  attach();
  IW.panel.whenReady(attach);
  loadShape();
  requestAnimationFrame(frame);
})();
