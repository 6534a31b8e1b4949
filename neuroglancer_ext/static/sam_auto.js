// ilastik-web extension, part 7: "segment everything" (micro-sam's AMG / AIS).
//
// One button segments every object of the slice the viewer is on (plane chosen: xy, xz or
// yz; "depth" > 1 takes a block of slices from there on) with the SAM model chosen in the
// SAM section. It posts POST /api/sam/automatic, shows the task's progress (Stop cancels)
// and reports how many objects were added to the source's instance layer
// (<source>-sam-objects), which the server pushes into the viewer.
(function () {
  "use strict";
  const IW = window.ilastikWeb;
  if (!IW || IW.reloading || !IW.panel || !IW.sam) return;
  const ng = IW.ng;
  const ui = IW.panel;
  const el = ui.el;
  const sam = IW.sam;
  const samApi = (path) => ui.prefix + "/api/sam" + path;

  const NORMAL_INDEX = { xy: 2, xz: 1, yz: 0 };
  const TASK_POLL_MS = 300;
  const FINISHED = ["done", "failed", "cancelled"];

  const auto = (IW.samAuto = { task: null, lastResult: null, lastBody: null });

  const methodSelect = el("select", { id: "iw-sam-auto-method",
                                      title: "auto: AIS when the model has a decoder, else AMG" },
                          ...["auto", "amg", "ais"].map((m) => el("option", { value: m }, m)));
  const planeSelect = el("select", { id: "iw-sam-auto-plane", title: "Slice plane" },
                         ...["xy", "xz", "yz"].map((p) => el("option", { value: p }, p)));
  const depthInput = el("input", { type: "number", id: "iw-sam-auto-depth", min: "1",
                                   max: "64", value: "1",
                                   title: "slices from the current one on (1: this slice)" });
  const pointsInput = el("input", { type: "number", id: "iw-sam-auto-points", min: "1",
                                    max: "128", value: "32",
                                    title: "AMG: points per side of the prompt grid" });
  const runButton = el("button", { id: "iw-sam-auto-run", disabled: true,
                                   title: "Segment every object of the current slice",
                                   onclick: () => run() }, "Segment all");
  const stopButton = el("button", { id: "iw-sam-auto-stop", hidden: true,
                                    onclick: () => stop() }, "Stop");
  const bar = el("div", { class: "iw-progress-bar" });
  const progress = el("div", { class: "iw-progress", id: "iw-sam-auto-progress", hidden: true },
                      bar);
  const info = el("div", { class: "iw-sam-info", id: "iw-sam-auto-info" });

  ui.addSection(ui.section("Segment everything",
    el("div", { class: "iw-row" }, methodSelect, planeSelect,
       el("label", { for: "iw-sam-auto-depth" }, "depth"), depthInput),
    el("div", { class: "iw-row" }, el("label", { for: "iw-sam-auto-points" }, "points"),
       pointsInput),
    el("div", { class: "iw-row" }, runButton, stopButton),
    progress, info));

  function render() {
    const running = auto.task !== null;
    runButton.disabled = sam.unavailable !== null || running || sam.target !== null;
    runButton.title = sam.unavailable !== null ? sam.unavailable
      : sam.target !== null ? "not for an image collection's items yet"
        : "Segment every object of the current slice";
    stopButton.hidden = !running;
    progress.hidden = !running;
    if (running) bar.style.width = Math.round(100 * (auto.task.progress || 0.02)) + "%";
    info.dataset.state = running ? "running" : auto.lastResult ? "done" : "idle";
  }
  sam.onChange.push(render);

  async function call(method, path, body) {
    try {
      return await ui.requestUrl(method, samApi(path), body);
    } catch (e) {
      ui.status("Segment everything: " + e.message, true);
      throw e;
    }
  }

  /** The slice index along the plane's normal at the viewer's position. */
  function currentIndex(plane) {
    const panel = ng.panels().find((p) => p.sliceView !== undefined);
    return Math.floor(ng.panelCenter(panel)[NORMAL_INDEX[plane]]);
  }

  async function run() {
    if (auto.task || sam.unavailable !== null) return;
    const plane = planeSelect.value;
    const depth = Math.max(1, Math.min(64, Math.round(Number(depthInput.value) || 1)));
    const body = { project_id: IW.project.id, plane, index: currentIndex(plane), depth,
                   params: { method: methodSelect.value } };
    const points = Math.round(Number(pointsInput.value));
    if (methodSelect.value !== "ais" && points >= 1 && points <= 128) {
      body.params.points_per_side = points;
    }
    if (sam.model) body.model = sam.model;
    auto.lastBody = body;
    auto.lastResult = null;
    try {
      auto.task = await call("POST", "/automatic", body);
    } catch (e) {
      return;
    }
    info.textContent = "segmenting…";
    render();
    while (auto.task && !FINISHED.includes(auto.task.state)) {
      await new Promise((resolve) => setTimeout(resolve, TASK_POLL_MS));
      try {
        auto.task = await call("GET", "/tasks/" + encodeURIComponent(auto.task.id));
      } catch (e) {
        auto.task = null;
      }
      render();
    }
    const task = auto.task;
    auto.task = null;
    if (task && task.state === "done") {
      auto.lastResult = task.result;
      info.textContent = task.result.objects + " objects (" + task.result.method + ")";
      ui.status("Segment everything: " + task.result.objects + " objects added to the " +
                "instance layer");
    } else if (task && task.state === "failed") {
      info.textContent = "failed";
      ui.status("Segment everything failed: " + (task.error || task.message), true);
    } else {
      info.textContent = task ? task.state : "";
    }
    render();
  }
  auto.run = run;

  function stop() {
    if (!auto.task) return;
    call("DELETE", "/tasks/" + encodeURIComponent(auto.task.id)).catch(() => {});
  }

  render();
})();
