// ilastik-web extension, part 5: SAM mode (segment anything).
//
// SAM mode (button or M): in an xy, xz or yz panel a click adds an "object" point, a
// Shift+click a "not object" point and a left-drag a box. Each prompt goes to
// POST /api/sam/prompt with all points of the current slice and the previous mask id, so
// it refines the current mask. The preview's polygons are drawn in the active class colour
// on the brush's overlay canvas (after the brush has drawn its strokes in the same frame).
// Enter / Accept paints the preview into the labels as the active class, Escape / Reject
// drops it; "Propagate 3D" runs the server's propagation task (progress bar) and the 3D
// preview shows on whichever slice the panels are on, then accept or reject it.
// Without a configured model the SAM button is disabled and says how to configure one.
(function () {
  "use strict";
  const IW = window.ilastikWeb;
  if (!IW || IW.reloading || !IW.panel) return;
  const ng = IW.ng;
  const brush = IW.brush;
  const ui = IW.panel;
  const el = ui.el;
  const samApi = (path) => ui.prefix + "/api/sam" + path;

  const NORMAL_INDEX = { xy: 2, xz: 1, yz: 0 };
  const DRAG_PIXELS = 5; // a press that moves farther than this is a box, not a click
  const TASK_POLL_MS = 300;
  const CONFIGURE_HINT = "No SAM model is configured. Start the server with " +
    "--sam-model [name=]type:/path/to/checkpoint.pt (e.g. vit_b:/models/sam_vit_b.pth)";

  const sam = (IW.sam = {
    mode: false,
    models: [], // from GET /api/sam/models
    model: null, // the chosen model's name (null: the server's default)
    unavailable: "loading SAM models…", // why SAM cannot be used, or null
    prompt: null, // {plane, index, points: [[x, y, z]], labels: [1|0], box: [[..], [..]]|null}
    preview: null, // the current mask's JSON (from a prompt or a propagation)
    accepted: [], // accepted previews drawn until the labels layer shows them
    busy: 0, // prompts in flight
    task: null, // the propagation task's JSON while it runs
    lastPrompt: null, // the body of the last prompt sent (for tests and debugging)
    lastAccept: null, // the server's answer to the last accept
    onChange: [],
    // Set by another part (collection.js) to prompt on other data than the project's:
    // {source() -> body fields naming the data, accept(preview) -> Promise of the answer}.
    target: null,
  });

  function changed() {
    for (const fn of sam.onChange) fn();
  }

  // --- the panel section -----------------------------------------------------------------

  const modeButton = el("button", { class: "iw-toggle", id: "iw-sam", disabled: true,
                                    title: sam.unavailable, onclick: () => setMode(!sam.mode) },
                        "SAM");
  const modelSelect = el("select", { id: "iw-sam-model", hidden: true,
                                     onchange: (e) => { sam.model = e.target.value; } });
  const acceptButton = el("button", { id: "iw-sam-accept", disabled: true,
                                      title: "Paint the preview as the active class (Enter)",
                                      onclick: () => accept() }, "Accept");
  const rejectButton = el("button", { id: "iw-sam-reject", disabled: true,
                                      title: "Discard the preview (Escape)",
                                      onclick: () => reject() }, "Reject");
  const propagateButton = el("button", { id: "iw-sam-propagate", disabled: true,
                                         title: "Carry this slice's mask through neighbouring " +
                                                "slices",
                                         onclick: () => propagate() }, "Propagate 3D");
  const spanInput = el("input", { type: "number", id: "iw-sam-span", min: "1", max: "64",
                                  value: "10", title: "slices on each side" });
  const cancelTaskButton = el("button", { id: "iw-sam-cancel-task", hidden: true,
                                          onclick: () => cancelTask() }, "Stop");
  const progressBar = el("div", { class: "iw-progress-bar" });
  const progress = el("div", { class: "iw-progress", id: "iw-sam-progress", hidden: true },
                      progressBar);
  const info = el("div", { class: "iw-sam-info", id: "iw-sam-info" });

  ui.addSection(ui.section("SAM",
    el("div", { class: "iw-row" }, modeButton, modelSelect,
       el("span", { class: "iw-hint" }, "click · shift-click · drag")),
    el("div", { class: "iw-row" }, acceptButton, rejectButton),
    el("div", { class: "iw-row" }, propagateButton, el("label", { for: "iw-sam-span" }, "±"),
       spanInput, cancelTaskButton),
    progress, info));
  ui.addShortcuts([
    ["M", "SAM mode on/off: click = object point, Shift+click = background point, " +
          "drag = box (xy, xz or yz panel)"],
    ["Enter", "accept the SAM preview into the active class"],
    ["Escape", "reject the SAM preview"],
  ]);

  function render() {
    const ready = sam.unavailable === null;
    modeButton.disabled = !ready;
    modeButton.title = ready ? "SAM mode (M)" : sam.unavailable;
    modeButton.classList.toggle("iw-on", sam.mode);
    const preview = sam.preview;
    const running = sam.task !== null;
    acceptButton.disabled = !preview || running;
    rejectButton.disabled = !(preview || sam.prompt) || running;
    propagateButton.disabled = !preview || preview.kind !== "prompt" || running || sam.busy > 0;
    cancelTaskButton.hidden = !running;
    progress.hidden = !running;
    if (running) progressBar.style.width = Math.round(100 * (sam.task.progress || 0.02)) + "%";
    document.body.classList.toggle("iw-sam-mode", sam.mode);
    let text = "";
    if (sam.busy > 0) text = "segmenting…";
    else if (running) text = "propagating… " + (sam.task.message || "");
    else if (preview) {
      const slices = preview.slices.filter((s) => s.pixels > 0).length;
      const score = preview.slices.length === 1 && typeof preview.slices[0].score === "number"
        ? " · score " + preview.slices[0].score.toFixed(2) : "";
      text = preview.voxels + " voxels on " + slices + " slice" + (slices === 1 ? "" : "s") +
        score + " · Enter accepts, Esc rejects";
    } else if (sam.mode) text = "click an object in a cross-section";
    // Why SAM is off, right under its button (the status line may be scrolled away).
    if (!ready && !text) text = sam.unavailable;
    info.textContent = text;
    info.dataset.state = sam.busy > 0 ? "busy" : running ? "propagating"
      : preview ? "preview" : "idle";
  }
  sam.onChange.push(render);

  function setMode(on) {
    if (on && sam.unavailable !== null) {
      ui.status(sam.unavailable, true);
      return;
    }
    sam.mode = on;
    if (on && brush.paintMode) brush.set({ paintMode: false });
    changed();
  }
  sam.setMode = setMode;
  // Paint mode and SAM mode exclude each other.
  brush.onChange.push(() => {
    if (brush.paintMode && sam.mode) setMode(false);
  });

  async function loadModels() {
    let data;
    try {
      const response = await fetch(samApi("/models"));
      data = response.ok ? await response.json() : { models: [] };
    } catch (e) {
      data = { models: [] };
    }
    sam.models = data.models || [];
    const usable = sam.models.filter((m) => m.available);
    if (sam.models.length === 0) sam.unavailable = CONFIGURE_HINT;
    else if (usable.length === 0) {
      sam.unavailable = "SAM checkpoint missing: " +
        sam.models.map((m) => m.checkpoint).join(", ") + " (fix the --sam-model path)";
    } else if (!sam.target && (!IW.project || !IW.project.id)) {
      sam.unavailable = "SAM needs a project";
    }
    else sam.unavailable = null;
    sam.model = usable.length ? usable[0].name : null;
    modelSelect.replaceChildren(...usable.map((m) => el("option", { value: m.name },
                                                        m.name + " (" + m.model_type + ")")));
    modelSelect.hidden = usable.length < 2;
    changed();
  }

  // --- talking to the server ---------------------------------------------------------------

  /** A request to the SAM API; errors (503 no checkpoint, 429 busy, ...) go to the status. */
  async function call(method, path, body) {
    try {
      return await ui.requestUrl(method, samApi(path), body);
    } catch (e) {
      if (e.status === 429) ui.status("SAM is busy (too many requests); try again", true);
      else ui.status("SAM: " + e.message, true);
      throw e;
    }
  }

  function forget(maskId) {
    // Superseded previews are dropped on the server too; a miss (already gone) is fine.
    fetch(samApi("/masks/" + encodeURIComponent(maskId)), { method: "DELETE" }).catch(() => {});
  }

  let queue = Promise.resolve(); // prompts run one after another (each refines the last)

  function sameSlice(prompt, plane, index) {
    return prompt && prompt.plane === plane && prompt.index === index;
  }

  /** Add a point (label 1 or 0) or a box to the prompt of the slice at `voxel` and send. */
  function addPrompt(plane, voxel, change) {
    const index = Math.floor(voxel[NORMAL_INDEX[plane]]);
    if (!sameSlice(sam.prompt, plane, index) || (sam.preview && sam.preview.kind !== "prompt")) {
      discard();
      sam.prompt = { plane, index, points: [], labels: [], box: null };
    }
    change(sam.prompt);
    const body = {
      ...(sam.target ? sam.target.source() : { project_id: IW.project.id }), plane, index,
      points_xyz: sam.prompt.points.map((p) => p.slice()),
      point_labels: sam.prompt.labels.slice(),
    };
    if (sam.prompt.box) body.box_xyz = sam.prompt.box.map((p) => p.slice());
    if (sam.model) body.model = sam.model;
    const prompt = sam.prompt;
    sam.busy++;
    changed();
    queue = queue.then(async () => {
      if (sam.prompt !== prompt) return; // discarded while waiting
      const previous = sam.preview && sam.preview.kind === "prompt" ? sam.preview : null;
      if (previous) body.previous_mask_id = previous.mask_id;
      sam.lastPrompt = body;
      try {
        const mask = await call("POST", "/prompt", body);
        if (sam.prompt !== prompt) {
          forget(mask.mask_id);
          return;
        }
        sam.preview = mask;
        if (previous) forget(previous.mask_id);
        ui.status("");
      } catch (e) {
        // The status line says why; the prompt's marks stay so the user can retry.
      }
    }).finally(() => {
      sam.busy--;
      changed();
    });
  }

  /** Forget the current prompt and preview (rejecting the preview on the server). */
  function discard() {
    if (sam.preview) forget(sam.preview.mask_id);
    sam.preview = null;
    sam.prompt = null;
  }

  async function reject() {
    if (sam.task) return;
    discard();
    changed();
    ui.status("SAM preview rejected");
  }
  sam.reject = reject;

  async function acceptToTarget(preview) {
    let result;
    try {
      result = await sam.target.accept(preview);
    } catch (e) {
      ui.status("SAM: " + e.message, true);
      return;
    }
    sam.lastAccept = result;
    if (sam.preview === preview) {
      sam.preview = null;
      sam.prompt = null;
    }
    changed();
  }

  async function accept() {
    const preview = sam.preview;
    if (preview && !sam.task && sam.target) return acceptToTarget(preview);
    if (!preview || sam.task || !IW.project.id) return;
    const cls = IW.project.classes.find((c) => c.value === brush.label);
    let result;
    try {
      result = await call("POST", "/masks/" + encodeURIComponent(preview.mask_id) + "/accept",
                          { target: "labels", project_id: IW.project.id, label: brush.label });
    } catch (e) {
      return;
    }
    sam.lastAccept = result;
    sam.accepted.push({ mask: preview, color: brush.color, revision: result.revision,
                        since: Date.now() });
    if (sam.preview === preview) {
      sam.preview = null;
      sam.prompt = null;
    }
    changed();
    ui.status("SAM: " + preview.voxels + " voxels labelled " + (cls ? cls.name : brush.label));
  }
  sam.accept = accept;

  async function propagate() {
    const seed = sam.preview;
    if (!seed || seed.kind !== "prompt" || sam.task) return;
    const span = Math.max(1, Math.min(64, Math.round(Number(spanInput.value) || 10)));
    const index = seed.slices[0].index;
    const axis = NORMAL_INDEX[seed.plane];
    const extent = IW.project.info && IW.project.info.shape_xyz ? IW.project.info.shape_xyz[axis]
      : index + span + 1;
    const body = { lower: Math.max(0, index - span), upper: Math.min(extent - 1, index + span) };
    if (sam.model) body.model = sam.model;
    try {
      sam.task = await call("POST", "/masks/" + encodeURIComponent(seed.mask_id) + "/propagate",
                            body);
    } catch (e) {
      return;
    }
    changed();
    while (sam.task && !["done", "failed", "cancelled"].includes(sam.task.state)) {
      await new Promise((resolve) => setTimeout(resolve, TASK_POLL_MS));
      try {
        sam.task = await call("GET", "/tasks/" + encodeURIComponent(sam.task.id));
      } catch (e) {
        sam.task = null;
      }
      changed();
    }
    const task = sam.task;
    sam.task = null;
    if (task && task.state === "done" && task.result && task.result.mask_id) {
      try {
        const mask = await call("GET", "/masks/" + encodeURIComponent(task.result.mask_id));
        if (sam.preview === seed) {
          sam.preview = mask;
          forget(seed.mask_id);
          ui.status("SAM: propagated through " + task.result.slices.length + " slices" +
                    (task.result.stopped ? " (stopped: " + task.result.stopped + ")" : ""));
        } else {
          forget(mask.mask_id);
        }
      } catch (e) {
        // reported in the status line
      }
    } else if (task && task.state === "failed") {
      ui.status("SAM propagation failed: " + (task.error || task.message), true);
    } else if (task) {
      ui.status("SAM propagation " + task.state);
    }
    changed();
  }
  sam.propagate = propagate;

  function cancelTask() {
    if (!sam.task) return;
    call("DELETE", "/tasks/" + encodeURIComponent(sam.task.id)).catch(() => {});
  }

  // --- drawing on the brush's overlay --------------------------------------------------------

  let gesture = null; // the press in progress: {panel, plane, start, startClient, client, ...}

  function overlayOf(panel) {
    return panel.element.querySelector(":scope > canvas.iw-overlay");
  }

  function ringPath(ctx, panel, rings) {
    ctx.beginPath();
    for (const ring of rings) {
      for (let i = 0; i < ring.length; i++) {
        const [x, y] = ng.screenOf(panel, ring[i]);
        if (i === 0) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
      }
      ctx.closePath();
    }
  }

  function drawMask(ctx, panel, mask, index, color, alpha) {
    const entry = mask.slices.find((s) => s.index === index);
    if (!entry || !entry.polygons_xyz || entry.polygons_xyz.length === 0) return;
    ringPath(ctx, panel, entry.polygons_xyz);
    ctx.globalAlpha = alpha;
    ctx.fillStyle = color;
    ctx.fill("evenodd");
    ctx.globalAlpha = 0.9;
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = color;
    ctx.stroke();
    ctx.globalAlpha = 1;
  }

  function drawPrompt(ctx, panel, prompt) {
    if (prompt.box) {
      const a = ng.screenOf(panel, prompt.box[0]);
      const b = ng.screenOf(panel, prompt.box[1]);
      ctx.setLineDash([5, 3]);
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = "#ffffff";
      ctx.strokeRect(Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.abs(b[0] - a[0]),
                     Math.abs(b[1] - a[1]));
      ctx.setLineDash([]);
    }
    prompt.points.forEach((point, i) => {
      const [x, y] = ng.screenOf(panel, point);
      ctx.beginPath();
      ctx.arc(x, y, 4.5, 0, 2 * Math.PI);
      ctx.fillStyle = prompt.labels[i] ? "#22dd44" : "#ee3333";
      ctx.fill();
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
    });
  }

  function drawPanel(panel) {
    const canvas = overlayOf(panel);
    if (!canvas) return;
    const ctx = canvas.getContext("2d");
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const plane = ng.planeOf(panel);
    const normal = NORMAL_INDEX[plane];
    if (normal === undefined) return;
    const index = Math.floor(ng.panelCenter(panel)[normal]);
    for (const done of sam.accepted) {
      if (done.mask.plane === plane) drawMask(ctx, panel, done.mask, index, done.color, 0.35);
    }
    if (sam.preview && sam.preview.plane === plane) {
      drawMask(ctx, panel, sam.preview, index, brush.color, 0.45);
    }
    if (sam.prompt && sameSlice(sam.prompt, plane, index)) drawPrompt(ctx, panel, sam.prompt);
    if (gesture && gesture.panel === panel && gesture.dragging) {
      const rect = panel.element.getBoundingClientRect();
      const [x0, y0] = gesture.startClient;
      const [x1, y1] = gesture.client;
      ctx.setLineDash([5, 3]);
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = "#ffffff";
      ctx.strokeRect(Math.min(x0, x1) - rect.left, Math.min(y0, y1) - rect.top,
                     Math.abs(x1 - x0), Math.abs(y1 - y0));
      ctx.setLineDash([]);
    }
  }

  /** The label revision the labels layer draws completely (-1: not known yet). */
  function labelRevisionDrawn() {
    const managed = IW.labelsLayerId && ng.layerServing(IW.labelsLayerId);
    if (!managed || !managed.layer || managed.layer.dataSources.length !== 1) return -1;
    const match = /\/r(\d+)-[0-9a-f]+(?:-outline)?\/?$/.exec(ng.sourceUrlOf(managed) || "");
    return match && ng.layerDrawn(managed.layer) ? Number(match[1]) : -1;
  }

  // Requested after the brush's own frame loop, so in every frame the brush clears and
  // draws the overlay first and SAM's shapes go on top.
  function frame() {
    try {
      if (sam.accepted.length) {
        const shown = labelRevisionDrawn();
        sam.accepted = sam.accepted.filter((a) => a.revision > shown &&
                                                  Date.now() - a.since < 5000);
      }
      if (sam.preview || sam.prompt || gesture || sam.accepted.length) {
        for (const panel of ng.panels()) {
          if (panel.sliceView !== undefined) drawPanel(panel);
        }
      }
    } catch (e) {
      console.warn("ilastik-web: SAM overlay drawing failed", e);
    }
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);

  // --- mouse and keys -------------------------------------------------------------------------

  function isSamPress(event) {
    return sam.mode && event.button === 0 && !event.ctrlKey && !event.altKey && !event.metaKey;
  }

  window.addEventListener("mousedown", (event) => {
    const panel = ng.slicePanelOf(event.target);
    if (!panel || !isSamPress(event)) return;
    event.stopPropagation();
    event.preventDefault();
    const plane = ng.planeOf(panel);
    if (NORMAL_INDEX[plane] === undefined) {
      ui.status("SAM works in the xy, xz and yz cross-sections", true);
      return;
    }
    const start = ng.voxelAt(panel, event.clientX, event.clientY);
    if (!start) return;
    gesture = { panel, plane, start, end: start, negative: event.shiftKey, dragging: false,
                startClient: [event.clientX, event.clientY],
                client: [event.clientX, event.clientY] };
  }, true);

  window.addEventListener("mousemove", (event) => {
    if (!gesture) return;
    event.stopPropagation();
    gesture.client = [event.clientX, event.clientY];
    const [x0, y0] = gesture.startClient;
    if (Math.hypot(event.clientX - x0, event.clientY - y0) > DRAG_PIXELS) gesture.dragging = true;
    const point = ng.voxelAt(gesture.panel, event.clientX, event.clientY);
    if (point) gesture.end = point;
  }, true);

  window.addEventListener("mouseup", (event) => {
    if (!gesture || event.button !== 0) return;
    event.stopPropagation();
    event.preventDefault();
    const g = gesture;
    gesture = null;
    if (g.dragging) {
      // The box lies on the start's slice whatever the normal coordinate of its end.
      const normal = NORMAL_INDEX[g.plane];
      const end = g.end.slice();
      end[normal] = g.start[normal];
      addPrompt(g.plane, g.start, (prompt) => {
        prompt.box = [g.start.slice(), end];
      });
    } else {
      addPrompt(g.plane, g.start, (prompt) => {
        prompt.points.push(g.start.slice());
        prompt.labels.push(g.negative ? 0 : 1);
      });
    }
  }, true);

  // The click that ends a SAM press must not reach Neuroglancer (it would select or move).
  window.addEventListener("click", (event) => {
    if (ng.slicePanelOf(event.target) && isSamPress(event)) event.stopPropagation();
  }, true);

  window.addEventListener("keydown", (event) => {
    const target = event.target;
    if (event.defaultPrevented || event.ctrlKey || event.altKey || event.metaKey) return;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" ||
                   target.tagName === "SELECT" || target.isContentEditable)) return;
    let handled = true;
    if (event.code === "KeyM" && !event.shiftKey) setMode(!sam.mode);
    else if (event.key === "Enter" && sam.preview && !sam.task) accept();
    else if (event.key === "Escape" && gesture) gesture = null;
    else if (event.key === "Escape" && (sam.preview || sam.prompt) && !sam.task) reject();
    else handled = false;
    if (handled) {
      event.stopPropagation();
      event.preventDefault();
    }
  }, true);

  // --- start -----------------------------------------------------------------------------------

  render();
  sam.loadModels = loadModels; // a fine-tuned model offered later (sam_jobs.js)
  loadModels();
  ui.whenReady(loadModels); // the project is known now: SAM can accept into its labels
})();
