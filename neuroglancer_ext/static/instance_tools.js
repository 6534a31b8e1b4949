// ilastik-web extension, part 8: instance annotation tools (objects, besides SAM).
//
// The "Objects" section picks a tool for the xy, xz or yz panels:
// - Select: a click selects the object under the mouse, Shift+click a second one
//   (for Merge); Merge folds the second into the first, Delete removes the selected one,
//   "Delete on slice" its region on the current slice only.
// - Polygon: clicks add vertices on one slice; drag a vertex to move it, Backspace takes the
//   last one back; Enter (or Commit, or a double-click) fills the polygon as a new object,
//   or adds it to the selected object with "add to selected". "Edit outline" loads the
//   selected object's outline on the current slice as editable vertices: committing
//   replaces its region on that slice.
// - Cutter: a polyline drawn across the selected object splits it (the smaller side
//   becomes a new object); in "trim" mode a polygon cuts away what it covers. With
//   "remove" the cut part becomes background instead.
// - Brush / Eraser: drags paint the selected object (into background only; no selection:
//   a new object), or erase the selected object's voxels only; the radius is the brush's.
// Escape drops the draft. Every edit goes to /api/instances/<layer>/... and joins the
// project's undo history: the panel's Undo / Redo (Ctrl+Z / Ctrl+Y) take it back.
// The instance layer (project-<id>-sam-objects) is made on first use; the server pushes
// it into the viewer. Another part may set .target instead (the collection does: the
// current item's objects, collection-objects?version=...): {layer(): the layer's GET
// answer, edited(result): called after each edit, extra(): more body fields (the class)};
// undo/redo then go to the layer's own history, and reset() forgets the layer, selection
// and draft (another item). Entry points for scripts and tests: window.ilastikWeb.instances
// (setTool, commit, cancel, select, merge, remove, clearSlice, editOutline, undo, redo,
// reset; state in .tool, .draft, .selected, .second, .layer, .lastResult, .target).
(function () {
  "use strict";
  const IW = window.ilastikWeb;
  if (!IW || IW.reloading || !IW.panel) return;
  const ng = IW.ng;
  const brush = IW.brush;
  const ui = IW.panel;
  const el = ui.el;

  const NORMAL_INDEX = { xy: 2, xz: 1, yz: 0 };
  const HANDLE_PIXELS = 7; // a press this close to a vertex drags it
  const TOOLS = ["select", "polygon", "cutter", "brush", "eraser"];
  const LABELS = { select: "Select", polygon: "Polygon", cutter: "Cutter", brush: "Brush",
                   eraser: "Eraser" };

  const inst = (IW.instances = {
    tool: null, // one of TOOLS, or null (off)
    layer: null, // GET /api/instances/<layer> answer
    target: null, // set by another part to edit its objects instead of the project's
    selected: null, // object id
    second: null, // object id (merge partner)
    draft: null, // {plane, index, vertices: [[x, y, z]], replace: objectId|null}
    lastResult: null, // the server's answer to the last edit
    busy: 0,
    onChange: [],
  });

  function changed() {
    for (const fn of inst.onChange) fn();
  }

  // --- the panel section ---------------------------------------------------------------------

  const toolButtons = TOOLS.map((tool) => el("button", {
    class: "iw-toggle", id: "iw-inst-" + tool, onclick: () => setTool(inst.tool === tool ? null
                                                                       : tool),
  }, LABELS[tool]));
  const addInput = el("input", { type: "checkbox", id: "iw-inst-add",
                                 title: "Polygons add to the selected object" });
  const cutMode = el("select", { id: "iw-inst-cut-mode", title: "split along a line, or trim " +
                                                                "with a polygon" },
                     el("option", { value: "split" }, "split"),
                     el("option", { value: "trim" }, "trim"));
  const removeInput = el("input", { type: "checkbox", id: "iw-inst-remove",
                                    title: "The cut part becomes background" });
  const commitButton = el("button", { id: "iw-inst-commit", disabled: true,
                                      title: "Commit the vertices (Enter)",
                                      onclick: () => commit() }, "Commit");
  const cancelButton = el("button", { id: "iw-inst-cancel", disabled: true,
                                      title: "Drop the vertices (Escape)",
                                      onclick: () => cancel() }, "Cancel");
  const editButton = el("button", { id: "iw-inst-edit", disabled: true,
                                    title: "Edit the selected object's outline on this slice",
                                    onclick: () => editOutline() }, "Edit outline");
  const mergeButton = el("button", { id: "iw-inst-merge", disabled: true,
                                     title: "Merge the second selected object (Shift+click) " +
                                            "into the first", onclick: () => merge() },
                         "Merge");
  const deleteButton = el("button", { id: "iw-inst-delete", disabled: true,
                                      title: "Delete the selected object",
                                      onclick: () => remove() }, "Delete");
  const clearButton = el("button", { id: "iw-inst-clear", disabled: true,
                                     title: "Delete the selected object's region on this " +
                                            "slice (a polygon)", onclick: () => clearSlice() },
                         "Delete on slice");
  const info = el("div", { class: "iw-sam-info", id: "iw-inst-info" });

  ui.addSection(ui.section("Objects",
    el("div", { class: "iw-row" }, ...toolButtons),
    el("div", { class: "iw-row" }, addInput, el("label", { for: "iw-inst-add" }, "add to selected"),
       cutMode, removeInput, el("label", { for: "iw-inst-remove" }, "remove")),
    el("div", { class: "iw-row" }, commitButton, cancelButton, editButton),
    el("div", { class: "iw-row" }, mergeButton, deleteButton, clearButton),
    info));
  ui.addShortcuts([
    ["O", "object tools off / back to the last one"],
    ["Enter", "commit a polygon or cut (object tools)"],
    ["Backspace", "take back the last vertex (object tools)"],
  ]);

  function render() {
    for (const button of toolButtons) {
      button.classList.toggle("iw-on", button.id === "iw-inst-" + inst.tool);
    }
    const draft = inst.draft;
    const least = inst.tool === "cutter" && cutMode.value === "split" ? 2 : 3;
    commitButton.disabled = !draft || draft.vertices.length < least || inst.busy > 0;
    cancelButton.disabled = !draft;
    editButton.disabled = inst.selected === null || inst.busy > 0;
    mergeButton.disabled = inst.selected === null || inst.second === null || inst.busy > 0;
    deleteButton.disabled = inst.selected === null || inst.busy > 0;
    clearButton.disabled = inst.selected === null || inst.busy > 0;
    let text = inst.tool ? LABELS[inst.tool] : "tools off";
    if (inst.selected !== null) text += " · object " + inst.selected;
    if (inst.second !== null) text += " + " + inst.second;
    if (draft) text += " · " + draft.vertices.length + " vertices, Enter commits";
    info.textContent = text;
    info.dataset.state = inst.busy > 0 ? "busy" : draft ? "draft" : "idle";
    document.body.classList.toggle("iw-inst-mode", inst.tool !== null);
  }
  inst.onChange.push(render);
  cutMode.addEventListener("change", changed);

  let lastTool = "polygon";
  function setTool(tool) {
    if (tool !== null && !TOOLS.includes(tool)) throw new Error("unknown tool " + tool);
    if (tool !== inst.tool) inst.draft = null;
    inst.tool = tool;
    if (tool !== null) {
      lastTool = tool;
      if (brush.paintMode) brush.set({ paintMode: false });
      if (IW.sam && IW.sam.mode) IW.sam.setMode(false);
      ensureLayer().catch(() => {});
    }
    changed();
  }
  inst.setTool = setTool;
  brush.onChange.push(() => {
    if (brush.paintMode && inst.tool !== null) setTool(null);
  });
  if (IW.sam) {
    IW.sam.onChange.push(() => {
      if (IW.sam.mode && inst.tool !== null) setTool(null);
    });
  }

  // --- talking to the server -----------------------------------------------------------------

  function layerPath(path) {
    let url = ui.prefix + "/api/instances/" + encodeURIComponent(inst.layer.layer_id) + path;
    if (inst.layer.item_id !== undefined) { // one layer for all items: the version names one
      url += (path.includes("?") ? "&" : "?") + "version=" +
        encodeURIComponent(inst.layer.version);
    }
    return url;
  }

  function reset() {
    inst.layer = null;
    inst.selected = null;
    inst.second = null;
    inst.draft = null;
    changed();
  }
  inst.reset = reset;

  async function ensureLayer() {
    if (inst.layer) return inst.layer;
    if (inst.target) {
      inst.layer = await inst.target.layer();
      changed();
      return inst.layer;
    }
    if (!IW.project || !IW.project.id) throw new Error("the object tools need a project");
    inst.layer = await ui.requestUrl("POST", ui.prefix + "/api/instances/layers",
                                     { project_id: IW.project.id });
    changed();
    return inst.layer;
  }
  inst.ensureLayer = ensureLayer;

  async function edit(method, path, body) {
    await ensureLayer();
    inst.busy++;
    changed();
    try {
      const extra = inst.target && inst.target.extra && method === "POST" ? inst.target.extra()
                                                                           : {};
      const sent = body !== undefined || method === "POST" ? Object.assign({}, extra, body)
                                                            : undefined;
      const result = await ui.requestUrl(method, layerPath(path), sent);
      inst.lastResult = result;
      if (result.version) inst.layer = Object.assign({}, inst.layer, { version: result.version });
      if (inst.target && inst.target.edited && result.changed) await inst.target.edited(result);
      return result;
    } catch (e) {
      ui.status("Objects: " + e.message, true);
      if (inst.target && e.status === 409) inst.layer = null; // stale item: fetch it again
      throw e;
    } finally {
      inst.busy--;
      changed();
    }
  }

  async function commit() {
    const draft = inst.draft;
    if (!draft || inst.busy > 0) return;
    const body = { plane: draft.plane, index: draft.index,
                   vertices_xyz: draft.vertices.map((v) => v.slice()) };
    let path = "/polygon";
    if (inst.tool === "cutter") {
      if (inst.selected === null) {
        ui.status("Objects: select the object to cut first", true);
        return;
      }
      path = "/cut";
      Object.assign(body, { object_id: inst.selected, mode: cutMode.value,
                            remove: removeInput.checked });
    } else if (draft.replace !== null) {
      Object.assign(body, { object_id: draft.replace, replace: true });
    } else if (addInput.checked && inst.selected !== null) {
      body.object_id = inst.selected;
    }
    let result;
    try {
      result = await edit("POST", path, body);
    } catch (e) {
      return; // the draft stays, to fix and retry
    }
    if (inst.draft === draft) inst.draft = null;
    if (path === "/polygon" && result.object_id) inst.selected = result.object_id;
    ui.status("Objects: " + (path === "/cut" ? "cut object " + body.object_id
                             : "object " + result.object_id));
    changed();
  }
  inst.commit = commit;

  function cancel() {
    inst.draft = null;
    changed();
  }
  inst.cancel = cancel;

  // Clicks are answered in the order they were made: a Shift+click right after a click
  // must not be undone by the first click's answer arriving last.
  let selecting = Promise.resolve();
  function select(point, second) {
    const next = selecting.then(() => selectNow(point, second));
    selecting = next.catch(() => {});
    return next;
  }

  async function selectNow(point, second) {
    await ensureLayer();
    const [x, y, z] = point;
    const answer = await ui.requestUrl("GET", layerPath("/at?x=" + x + "&y=" + y + "&z=" + z));
    const id = answer.object_id || null;
    if (second) inst.second = id === inst.selected ? null : id;
    else {
      inst.selected = id;
      inst.second = null;
    }
    changed();
    return id;
  }
  inst.select = select;

  async function merge() {
    if (inst.selected === null || inst.second === null) return;
    await edit("POST", "/merge", { object_ids: [inst.selected, inst.second] });
    inst.second = null;
    changed();
  }
  inst.merge = merge;

  async function remove() {
    if (inst.selected === null) return;
    await edit("DELETE", "/objects/" + inst.selected);
    inst.selected = null;
    inst.second = null;
    changed();
  }
  inst.remove = remove;

  /** The plane and slice index of the first cross-section panel, or null. */
  function currentSlice() {
    const panel = ng.panels().find((p) => p.sliceView !== undefined &&
                                          NORMAL_INDEX[ng.planeOf(p)] !== undefined);
    if (!panel) return null;
    const plane = ng.planeOf(panel);
    return { plane, index: Math.floor(ng.panelCenter(panel)[NORMAL_INDEX[plane]]) };
  }

  async function clearSlice() {
    const where = currentSlice();
    if (inst.selected === null || !where) return;
    await edit("POST", "/clear", { object_id: inst.selected, plane: where.plane,
                                   index: where.index });
  }
  inst.clearSlice = clearSlice;

  async function editOutline() {
    if (inst.selected === null) return;
    const where = currentSlice();
    if (!where) return;
    const { plane, index } = where;
    await ensureLayer();
    const answer = await ui.requestUrl("GET", layerPath(
      "/objects/" + inst.selected + "/outline?plane=" + plane + "&index=" + index));
    if (!answer.polygons_xyz.length) {
      ui.status("Objects: object " + inst.selected + " has nothing on this slice", true);
      return;
    }
    if (inst.tool !== "polygon") setTool("polygon");
    inst.draft = { plane, index, vertices: answer.polygons_xyz[0], replace: inst.selected };
    changed();
  }
  inst.editOutline = editOutline;

  async function history(which) {
    if (inst.target) return edit("POST", "/" + which);
    if (!IW.project || !IW.project.id) return null;
    return ui.requestUrl("POST", ui.prefix + "/api/projects/" +
                         encodeURIComponent(IW.project.id) + "/" + which);
  }
  inst.undo = () => history("undo");
  inst.redo = () => history("redo");

  // --- drawing on the brush's overlay ----------------------------------------------------------

  let gesture = null; // a press: {panel, plane, kind: "vertex"|"stroke"|"move", ...}

  function overlayOf(panel) {
    return panel.element.querySelector(":scope > canvas.iw-overlay");
  }

  function drawDraft(ctx, panel, draft) {
    const closed = !(inst.tool === "cutter" && cutMode.value === "split");
    const points = draft.vertices.map((v) => ng.screenOf(panel, v));
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "#ffdd00";
    ctx.beginPath();
    points.forEach(([x, y], i) => (i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y)));
    if (closed && points.length > 2) {
      ctx.closePath();
      ctx.globalAlpha = 0.25;
      ctx.fillStyle = "#ffdd00";
      ctx.fill();
      ctx.globalAlpha = 1;
    }
    ctx.stroke();
    for (const [x, y] of points) {
      ctx.fillStyle = "#ffffff";
      ctx.fillRect(x - 3, y - 3, 6, 6);
      ctx.strokeRect(x - 3, y - 3, 6, 6);
    }
  }

  function drawStroke(ctx, panel, stroke) {
    ctx.lineWidth = 2;
    ctx.strokeStyle = stroke.erase ? "#ff4444" : "#44ddff";
    ctx.beginPath();
    stroke.points.forEach((p, i) => {
      const [x, y] = ng.screenOf(panel, p);
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }

  function frame() {
    try {
      if (inst.draft || (gesture && gesture.kind === "stroke")) {
        for (const panel of ng.panels()) {
          if (panel.sliceView === undefined) continue;
          const canvas = overlayOf(panel);
          if (!canvas) continue;
          const plane = ng.planeOf(panel);
          const normal = NORMAL_INDEX[plane];
          if (normal === undefined) continue;
          const ctx = canvas.getContext("2d");
          const dpr = window.devicePixelRatio || 1;
          ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
          const index = Math.floor(ng.panelCenter(panel)[normal]);
          const draft = inst.draft;
          if (draft && draft.plane === plane && draft.index === index) drawDraft(ctx, panel, draft);
          if (gesture && gesture.kind === "stroke" && gesture.panel === panel) {
            drawStroke(ctx, panel, gesture);
          }
        }
      }
    } catch (e) {
      console.warn("ilastik-web: object tools' overlay drawing failed", e);
    }
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);

  // --- mouse and keys ---------------------------------------------------------------------------

  function isToolPress(event) {
    return inst.tool !== null && event.button === 0 && !event.ctrlKey && !event.altKey &&
      !event.metaKey;
  }

  function nearVertex(panel, draft, clientX, clientY) {
    const rect = panel.element.getBoundingClientRect();
    const x = clientX - rect.left;
    const y = clientY - rect.top;
    for (let i = draft.vertices.length - 1; i >= 0; i--) {
      const [vx, vy] = ng.screenOf(panel, draft.vertices[i]);
      if (Math.hypot(vx - x, vy - y) <= HANDLE_PIXELS) return i;
    }
    return -1;
  }

  window.addEventListener("mousedown", (event) => {
    const panel = ng.slicePanelOf(event.target);
    if (!panel || !isToolPress(event)) return;
    event.stopPropagation();
    event.preventDefault();
    const plane = ng.planeOf(panel);
    const normal = NORMAL_INDEX[plane];
    if (normal === undefined) {
      ui.status("The object tools work in the xy, xz and yz cross-sections", true);
      return;
    }
    const point = ng.voxelAt(panel, event.clientX, event.clientY);
    if (!point) return;
    const index = Math.floor(point[normal]);
    if (inst.tool === "select") {
      select(point, event.shiftKey).catch(() => {});
      return;
    }
    if (inst.tool === "brush" || inst.tool === "eraser") {
      gesture = { kind: "stroke", panel, plane, points: [point], erase: inst.tool === "eraser" };
      return;
    }
    const draft = inst.draft;
    if (draft && draft.plane === plane && draft.index === index) {
      const hit = nearVertex(panel, draft, event.clientX, event.clientY);
      if (hit >= 0) {
        gesture = { kind: "move", panel, plane, vertex: hit };
        return;
      }
    }
    if (!draft || draft.plane !== plane || draft.index !== index) {
      inst.draft = { plane, index, vertices: [], replace: null };
    }
    // The vertex lies on the slice's centre plane.
    const vertex = point.slice();
    vertex[normal] = index + 0.5;
    inst.draft.vertices.push(vertex);
    changed();
  }, true);

  window.addEventListener("mousemove", (event) => {
    if (!gesture) return;
    event.stopPropagation();
    const point = ng.voxelAt(gesture.panel, event.clientX, event.clientY);
    if (!point) return;
    if (gesture.kind === "stroke") gesture.points.push(point);
    else if (gesture.kind === "move" && inst.draft) {
      const normal = NORMAL_INDEX[gesture.plane];
      const vertex = point.slice();
      vertex[normal] = inst.draft.vertices[gesture.vertex][normal];
      inst.draft.vertices[gesture.vertex] = vertex;
      changed();
    }
  }, true);

  window.addEventListener("mouseup", (event) => {
    if (!gesture || event.button !== 0) return;
    event.stopPropagation();
    event.preventDefault();
    const g = gesture;
    gesture = null;
    if (g.kind !== "stroke") return;
    const body = { points_xyz: g.points.slice(0, 10000), radius: brush.radius, plane: g.plane,
                   erase: g.erase };
    if (inst.selected !== null) body.object_id = inst.selected;
    edit("POST", "/brush", body).then((result) => {
      if (!g.erase && inst.selected === null && result.object_id) {
        inst.selected = result.object_id;
        changed();
      }
    }).catch(() => {});
  }, true);

  window.addEventListener("dblclick", (event) => {
    if (!ng.slicePanelOf(event.target) || inst.tool === null) return;
    event.stopPropagation();
    event.preventDefault();
    if (inst.tool === "polygon" || inst.tool === "cutter") {
      // The double-click's second press added a vertex on top of the last one: drop it.
      const draft = inst.draft;
      if (draft && draft.vertices.length > 1) {
        const [a, b] = draft.vertices.slice(-2);
        if (Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]) < 1) draft.vertices.pop();
      }
      commit();
    }
  }, true);

  // The click that ends a tool's press must not reach Neuroglancer (it would select or move).
  window.addEventListener("click", (event) => {
    if (ng.slicePanelOf(event.target) && isToolPress(event)) event.stopPropagation();
  }, true);

  window.addEventListener("keydown", (event) => {
    const target = event.target;
    if (event.defaultPrevented || event.ctrlKey || event.altKey || event.metaKey) return;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" ||
                   target.tagName === "SELECT" || target.isContentEditable)) return;
    let handled = true;
    if (event.code === "KeyO" && !event.shiftKey) setTool(inst.tool === null ? lastTool : null);
    else if (inst.tool === null) handled = false;
    else if (event.key === "Enter" && inst.draft) commit();
    else if (event.key === "Escape" && (inst.draft || gesture)) {
      gesture = null;
      cancel();
    } else if (event.key === "Backspace" && inst.draft) {
      inst.draft.vertices.pop();
      changed();
    } else if (event.key === "Delete" && inst.selected !== null && !inst.draft) remove();
    else handled = false;
    if (handled) {
      event.stopPropagation();
      event.preventDefault();
    }
  }, true);

  render();
})();
