// ilastik-web extension, part 8: image collections, one item at a time.
//
// When the server serves a collection (serve --collection DIR) this section shows the
// current item (its place, whether and by whom it is annotated, who works on it), moves to
// the previous / next item or to the next item nobody has annotated (the server claims it
// for this user), and lists all items with their status (a click opens one). Switching an
// item points the viewer's collection layers at the item's versions (ng.swapSource: no
// rebuild) — image, objects and, once trained, the pixel prediction. In SAM mode previews
// are prompted on the current item and Enter adds them as objects of the class typed here;
// the server writes them to annotations/ at once. The Objects tools (polygon, cutter, brush,
// merge, delete, their undo / redo) edit the current item's objects the same way, new
// objects taking the class typed here. "Export" writes a training set (TIFF
// folders, cellpose pairs or OME-Zarr, split train/val by item) as a task; "Train" trains
// the pixel classifier across all annotated items.
(function () {
  "use strict";
  const IW = window.ilastikWeb;
  if (!IW || IW.reloading || !IW.panel) return;
  const ng = IW.ng;
  const ui = IW.panel;
  const el = ui.el;
  const api = (path) => ui.prefix + "/api/collection" + path;
  const TASK_POLL_MS = 300;
  const FINISHED = ["done", "failed", "cancelled"];

  const collection = (IW.collection = {
    ready: false,
    info: null, // GET /api/collection
    view: null, // the current item's view (GET /api/collection/items/{id})
    lastExport: null, // the last export task's result
    lastTraining: null, // the last training task's result
    task: null, // the running export or training task
    go, open, exportSet, train,
  });

  const prevButton = el("button", { id: "iw-coll-prev", title: "previous item",
                                    onclick: () => go("previous") }, "◀ Prev");
  const nextButton = el("button", { id: "iw-coll-next", title: "next item",
                                    onclick: () => go("next") }, "Next ▶");
  const todoButton = el("button", { id: "iw-coll-unannotated",
                                    title: "the next item nobody has annotated or works on",
                                    onclick: () => go("unannotated") }, "Next unannotated");
  const itemInfo = el("div", { class: "iw-sam-info", id: "iw-coll-item" });
  const classInput = el("input", { type: "text", id: "iw-coll-class", value: "object",
                                   size: "10", title: "semantic class of accepted objects" });
  const itemList = el("div", { id: "iw-coll-items", class: "iw-coll-items" });
  const layoutSelect = el("select", { id: "iw-coll-layout", title: "training set layout" },
                          el("option", { value: "tiff" }, "TIFF folders"),
                          el("option", { value: "cellpose" }, "cellpose pairs"),
                          el("option", { value: "ome-zarr" }, "OME-Zarr + labels"));
  const valInput = el("input", { type: "number", id: "iw-coll-val", min: "0", max: "0.9",
                                 step: "0.1", value: "0.2", title: "validation fraction" });
  const exportButton = el("button", { id: "iw-coll-export", onclick: () => exportSet() },
                          "Export training set");
  const trainButton = el("button", { id: "iw-coll-train", onclick: () => train(),
                                     title: "pixel classifier on every annotated item" },
                         "Train pixels");
  const bar = el("div", { class: "iw-progress-bar" });
  const progress = el("div", { class: "iw-progress", id: "iw-coll-progress", hidden: true }, bar);
  const taskInfo = el("div", { class: "iw-sam-info", id: "iw-coll-task" });
  const section = ui.section("Collection",
    el("div", { class: "iw-row" }, prevButton, nextButton, todoButton),
    itemInfo,
    el("div", { class: "iw-row" }, el("label", { for: "iw-coll-class" }, "class"), classInput),
    itemList,
    el("div", { class: "iw-row" }, layoutSelect, el("label", { for: "iw-coll-val" }, "val"),
       valInput),
    el("div", { class: "iw-row" }, exportButton, trainButton),
    progress, taskInfo);
  section.id = "iw-collection";

  function call(method, path, body) {
    return ui.requestUrl(method, api(path), body);
  }

  function describe(status) {
    let text = status.annotated ? "annotated by " + (status.author || "?") : "not annotated";
    if (status.assigned_to) {
      text += status.mine ? " · assigned to you" : " · " + status.assigned_to + " works on it";
    }
    return text;
  }

  function render() {
    const view = collection.view;
    const info = collection.info;
    const running = collection.task !== null;
    prevButton.disabled = !view || view.item.index === 0;
    nextButton.disabled = !view || !info || view.item.index >= info.count - 1;
    exportButton.disabled = running || !info || info.annotated === 0;
    trainButton.disabled = running || !info || info.annotated === 0;
    progress.hidden = !running;
    if (running) bar.style.width = Math.round(100 * (collection.task.progress || 0.02)) + "%";
    if (view) {
      itemInfo.textContent = (view.item.index + 1) + " / " + (info ? info.count : "?") + " · " +
        view.item.name + " · " + describe(view.item) + " · " + view.object_list.length +
        " object" + (view.object_list.length === 1 ? "" : "s");
      itemInfo.dataset.item = view.item.id;
    }
    if (info) {
      itemList.replaceChildren(...info.items.map((item) => el("div", {
        class: "iw-coll-entry" + (view && item.id === view.item.id ? " iw-on" : ""),
        "data-item": item.id, "data-annotated": String(item.annotated),
        title: describe(item), onclick: () => open(item.id),
      }, (item.annotated ? "✓ " : "· ") + item.name)));
    }
  }

  /** Point the managed layer serving `layerId` at `url` (added by the server at start). */
  function show(part) {
    if (!part) return;
    const managed = ng.layerServing(part.layer_id);
    if (managed) ng.swapSource(managed, "precomputed://" + part.url, 5000);
  }

  function centre(view) {
    const [z, y, x] = view.shape;
    try {
      ng.viewer().position.value = Float32Array.from([x / 2, y / 2, z / 2]);
    } catch (e) {
      console.warn("ilastik-web: could not centre the view", e);
    }
  }

  async function apply(view, moved) {
    const previous = collection.view;
    collection.view = view;
    show(view.image);
    show(view.objects);
    show(view.prediction);
    if (moved && (!previous || String(previous.shape) !== String(view.shape))) centre(view);
    if (moved && IW.sam && IW.sam.preview) IW.sam.reject();
    if (moved && IW.instances && IW.instances.target === instancesTarget) IW.instances.reset();
    render();
  }

  async function refresh() {
    collection.info = await call("GET", "");
    render();
  }

  async function go(direction) {
    const from = collection.view ? collection.view.item.id : undefined;
    let view;
    try {
      view = await call("POST", "/navigate", { from, to: direction });
    } catch (e) {
      return;
    }
    if (!view.item) {
      ui.status(view.message || "no such item");
      return;
    }
    await apply(view, true);
    ui.status("item " + view.item.name);
    refresh().catch(() => {});
  }

  async function open(itemId) {
    try {
      await apply(await call("GET", "/items/" + encodeURIComponent(itemId)), true);
    } catch (e) {
      return;
    }
    refresh().catch(() => {});
  }

  async function runTask(path, body, what) {
    if (collection.task) return null;
    try {
      collection.task = await call("POST", path, body);
    } catch (e) {
      return null;
    }
    taskInfo.textContent = what + "…";
    render();
    while (collection.task && !FINISHED.includes(collection.task.state)) {
      await new Promise((resolve) => setTimeout(resolve, TASK_POLL_MS));
      try {
        collection.task = await call("GET", "/tasks/" + encodeURIComponent(collection.task.id));
      } catch (e) {
        break;
      }
      render();
    }
    const task = collection.task;
    collection.task = null;
    render();
    if (task && task.state === "done") return task.result;
    taskInfo.textContent = what + " " + (task ? task.state : "lost");
    if (task && task.error) ui.status(what + " failed: " + task.error, true);
    return null;
  }

  async function exportSet() {
    const val = Math.max(0, Math.min(0.9, Number(valInput.value) || 0));
    const result = await runTask("/exports", { layout: layoutSelect.value, val_fraction: val },
                                 "exporting");
    if (!result) return;
    collection.lastExport = result;
    taskInfo.textContent = result.items + " items → " + result.path;
    ui.status("training set written to " + result.path);
  }

  async function train() {
    const result = await runTask("/train", undefined, "training");
    if (!result) return;
    collection.lastTraining = result;
    taskInfo.textContent = "pixel classifier g" + result.generation + " on " +
      Object.keys(result.items).length + " items";
    if (collection.view) await open(collection.view.item.id); // its prediction version
  }

  // SAM prompts on the current item; accepted previews become its objects.
  const samTarget = {
      source: () => ({ layer_id: collection.view.image.layer_id,
                       version: collection.view.image.version }),
      accept: async (preview) => {
        const itemId = collection.view.item.id;
        const result = await call("POST", "/items/" + encodeURIComponent(itemId) + "/objects",
                                  { mask_id: preview.mask_id, class: classInput.value || "object" });
        if (collection.view && collection.view.item.id === itemId) await apply(result, false);
        ui.status("object " + result.object_id + " (" + (classInput.value || "object") +
                  ") added to " + result.item.name);
        refresh().catch(() => {});
        return result;
      },
    };

  // The object tools edit the current item's objects (one layer; the version names the item).
  const instancesTarget = {
    layer: async () => {
      // The item as it is now (another tab or annotator may have edited it since).
      const view = await call("GET", "/items/" + encodeURIComponent(collection.view.item.id));
      await apply(view, false);
      return ui.requestUrl("GET", ui.prefix + "/api/instances/" +
                           encodeURIComponent(view.objects.layer_id) + "?version=" +
                           encodeURIComponent(view.objects.version));
    },
    extra: () => ({ class: classInput.value || "object" }),
    edited: async () => {
      const itemId = collection.view.item.id;
      const view = await call("GET", "/items/" + encodeURIComponent(itemId));
      if (collection.view && collection.view.item.id === itemId) await apply(view, false);
      refresh().catch(() => {});
    },
  };

  async function start() {
    const response = await fetch(api(""));
    if (!response.ok) return;
    const info = await response.json();
    if (!info.served) return; // no collection: SAM works on the project
    collection.info = info;
    ui.addSection(section);
    const first = await call("POST", "/navigate", { to: "unannotated" })
      .then((view) => (view.item ? view : call("POST", "/navigate", { to: "first" })));
    await apply(first, false);
    await refresh();
    if (IW.instances) IW.instances.target = instancesTarget;
    if (IW.sam) {
      IW.sam.target = samTarget;
      if (IW.sam.loadModels) IW.sam.loadModels(); // SAM works without a project now
    }
    // No project: the Jobs list and SAM jobs are the collection's (jobs.js, sam_jobs.js).
    if (IW.jobs && !IW.project.id) {
      IW.jobs.use({ kind: "collection", base: api("/jobs") });
      if (IW.samJobs) IW.samJobs.useCollection();
    }
    collection.ready = true;
  }
  start().catch((e) => ui.status("could not load the collection: " + e.message, true));
})();
