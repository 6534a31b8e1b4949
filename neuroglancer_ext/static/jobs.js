// ilastik-web extension, part 6: the Jobs section of the side panel.
//
// Submit a batch export of the current classifier (export kind, format, output dtype, the
// engine among those the server offers (GET /api/engines), output path: empty means the
// server's default, exports/ in the project folder; an optional region), list the
// project's jobs with state and a progress bar (polled every POLL_MS while any job is
// pending or running), cancel, resume, read the logs, and open a finished export as a new
// layer of the viewer. It talks to /api/projects/<id>/jobs; on a server that serves an image
// collection and no project, the list is the collection's (/api/collection/jobs: its SAM
// jobs, see sam_jobs.js) and the export controls, which need a project's classifier, hide.
(function () {
  "use strict";
  const IW = window.ilastikWeb;
  if (!IW || IW.reloading || !IW.panel) return;
  const ui = IW.panel;
  const el = ui.el;

  const EXPORTS = ["probabilities", "segmentation", "uncertainty", "features"];
  const FORMATS = ["ome-zarr", "n5", "precomputed", "hdf5", "tiff"];
  const ACTIVE = ["PENDING", "RUNNING"];
  // How each export can be stored, the default (what the viewer shows) first; as the
  // server's OUTPUT_DTYPES.
  const DTYPES = {
    probabilities: [["uint8", "uint8 (0–255)"], ["uint16", "uint16 (0–65535)"],
                    ["float32", "float32 (0–1)"]],
    segmentation: [["uint8", "uint8 classes"], ["uint16", "uint16 classes"]],
    uncertainty: [["uint8", "uint8 (0–255)"], ["uint16", "uint16 (0–65535)"],
                  ["float32", "float32 (0–1)"]],
    features: [["float32", "float32"]],
  };
  const POLL_MS = 1500;

  // target: whose jobs the list shows ({kind: "project"|"collection", base: URL}).
  const jobs = (IW.jobs = { list: [], logsOpen: null, polling: false, target: null, use });
  const url = (rest) => jobs.target.base + (rest || "");

  const exportSelect = el("select", { id: "iw-job-export", title: "What to export" },
                          ...EXPORTS.map((e) => el("option", { value: e }, e)));
  const formatSelect = el("select", { id: "iw-job-format", title: "File format" },
                          ...FORMATS.map((f) => el("option", { value: f }, f)));
  const dtypeSelect = el("select", { id: "iw-job-dtype", title: "How the values are stored" });
  const engineSelect = el("select", { id: "iw-job-engine",
                                      title: "Where the job runs (engines this server offers)" },
                          el("option", { value: "local" }, "local"));
  function renderDtypes() {
    const keep = dtypeSelect.value;
    const choices = DTYPES[exportSelect.value] || [];
    dtypeSelect.replaceChildren(...choices.map(([value, text]) => el("option", { value }, text)));
    if (choices.some(([value]) => value === keep)) dtypeSelect.value = keep;
  }
  exportSelect.addEventListener("change", renderDtypes);
  renderDtypes();
  async function loadEngines() {
    const data = await ui.requestUrl("GET", ui.prefix + "/api/engines").catch(() => null);
    const engines = (data && data.engines) || [];
    if (!engines.length) return;
    const keep = engineSelect.value;
    engineSelect.replaceChildren(...engines.map((e) => el("option", { value: e.name },
      e.name === e.kind ? e.name : e.name + " (" + e.kind + ")")));
    if (engines.some((e) => e.name === keep)) engineSelect.value = keep;
  }
  const outputInput = el("input", { type: "text", id: "iw-job-output", class: "iw-wide",
                                    placeholder: "output: <project>/exports/ (default)",
                                    title: "Output path on the server; empty: a new file " +
                                           "under the project's exports/ folder" });
  const roiInput = el("input", { type: "text", id: "iw-job-roi", class: "iw-wide",
                                 placeholder: "region z0:z1,y0:y1,x0:x1 (default: all)",
                                 title: "Only this region (voxels of the chosen level)" });
  const submitButton = el("button", { id: "iw-job-submit", onclick: () => submit() },
                          "Export");
  const list = el("div", { class: "iw-jobs", id: "iw-jobs" });
  const logs = el("pre", { class: "iw-job-logs", id: "iw-job-logs", hidden: true });

  const exportControls = el("div", { class: "iw-job-exports" },
    el("div", { class: "iw-row" }, exportSelect, formatSelect, submitButton),
    el("div", { class: "iw-row" }, dtypeSelect, engineSelect),
    el("div", { class: "iw-row" }, outputInput),
    el("div", { class: "iw-row" }, roiInput));
  const section = ui.section("Jobs", exportControls, list, logs);
  section.id = "iw-jobs-section";
  ui.addSection(section);

  function button(text, cls, title, action) {
    return el("button", { class: cls, title, onclick: action }, text);
  }

  function renderJobs() {
    list.replaceChildren(...jobs.list.map((job) => {
      const total = job.blocks_total || 0;
      const fraction = job.state === "DONE" ? 1 : total ? job.blocks_done / total : 0;
      const bar = el("div", { class: "iw-progress-bar",
                              style: "width:" + Math.round(100 * fraction) + "%" });
      const actions = [];
      if (ACTIVE.includes(job.state)) {
        actions.push(button("Cancel", "iw-job-cancel", "Stop this job", () => act(job, "cancel")));
      }
      if (job.state === "FAILED" || job.state === "CANCELLED") {
        actions.push(button("Resume", "iw-job-resume", "Run the missing blocks",
                            () => act(job, "resume")));
      }
      if (job.state === "DONE" && (job.kind || "export") === "export") {
        actions.push(button("Open as layer", "iw-job-open", "Show the export in the viewer",
                            () => openLayer(job)));
      }
      if (IW.samJobs) actions.push(...IW.samJobs.actions(job)); // sam_jobs.js
      actions.push(button("Logs", "iw-job-logs-button", "Show the job's logs",
                          () => toggleLogs(job)));
      const name = job.output.split("/").pop();
      return el("div", { class: "iw-job", "data-job": job.id, "data-state": job.state },
        el("div", { class: "iw-row" },
           el("span", { class: "iw-job-name", title: job.output }, name),
           el("span", { class: "iw-job-engine", title: "Engine that runs this job" },
              job.engine),
           el("span", { class: "iw-job-dtype", title: "Stored as" }, job.dtype || ""),
           el("span", { class: "iw-job-state iw-state-" + job.state.toLowerCase() },
              job.state.toLowerCase())),
        el("div", { class: "iw-progress" + (ACTIVE.includes(job.state) ? " iw-busy" : "") },
           bar),
        el("div", { class: "iw-row iw-job-detail" },
           el("span", { class: "iw-job-blocks" }, job.blocks_done + "/" + total + " blocks" +
              (job.message && job.state !== "DONE" ? " · " + job.message : "") +
              (job.progress && job.progress.message ? " · " + job.progress.message : "")),
           ...actions));
    }));
  }

  async function refresh() {
    // Read quietly: a project without a folder cannot run jobs, which the list says.
    if (!jobs.target) return;
    const response = await fetch(url());
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      list.replaceChildren(el("div", { class: "iw-hint" }, data.error || response.statusText));
      submitButton.disabled = true;
      return;
    }
    // Newest first.
    jobs.list = (data.jobs || []).slice().sort((a, b) => (b.created || 0) - (a.created || 0));
    renderJobs();
    if (jobs.logsOpen) loadLogs(jobs.logsOpen);
    if (jobs.list.some((j) => ACTIVE.includes(j.state))) poll();
  }
  jobs.refresh = refresh;

  function poll() {
    if (jobs.polling) return;
    jobs.polling = true;
    setTimeout(async () => {
      jobs.polling = false;
      try {
        await refresh();
      } catch (e) {
        poll(); // the status line says what failed; keep trying while jobs run
      }
    }, POLL_MS);
  }

  async function submit() {
    const body = { export: exportSelect.value, format: formatSelect.value,
                   dtype: dtypeSelect.value, engine: engineSelect.value };
    if (outputInput.value.trim()) body.output = outputInput.value.trim();
    if (roiInput.value.trim()) body.roi = roiInput.value.trim();
    submitButton.disabled = true;
    try {
      const job = await ui.requestUrl("POST", url(), body);
      ui.status("job " + job.id + " submitted: " + job.export + " → " + job.output);
      outputInput.value = "";
      await refresh();
    } catch (e) {
      // request() put the server's message in the status line
    } finally {
      submitButton.disabled = false;
    }
  }

  async function act(job, action) {
    try {
      const updated = await ui.requestUrl("POST", url("/" + encodeURIComponent(job.id) + "/" +
                                                       action));
      ui.status("job " + job.id + ": " + updated.state.toLowerCase());
      await refresh();
    } catch (e) {
      // shown in the status line
    }
  }

  async function openLayer(job) {
    try {
      const result = await ui.requestUrl("POST", url("/" + encodeURIComponent(job.id) +
                                                     "/layer"));
      ui.status("opened " + job.export + " of job " + job.id + " as layer " + result.layer_id);
    } catch (e) {
      // shown in the status line
    }
  }

  async function loadLogs(jobId) {
    const response = await fetch(url("/" + encodeURIComponent(jobId) + "/logs"));
    logs.textContent = response.ok ? await response.text()
      : "logs unavailable (" + response.status + ")";
    logs.scrollTop = logs.scrollHeight;
  }

  function toggleLogs(job) {
    if (jobs.logsOpen === job.id) {
      jobs.logsOpen = null;
      logs.hidden = true;
      return;
    }
    jobs.logsOpen = job.id;
    logs.hidden = false;
    logs.dataset.job = job.id;
    loadLogs(job.id).catch((e) => ui.status("logs: " + e.message, true));
  }

  /** Show the jobs of `target` ({kind, base}); a project's, once known, wins over a
   * collection's (collection.js offers its own when no project is served). */
  function use(target) {
    if (jobs.target && jobs.target.kind === "project" && target.kind !== "project") return;
    jobs.target = target;
    jobs.list = [];
    exportControls.hidden = target.kind !== "project";
    section.hidden = false;
    refresh().catch(() => {});
    loadEngines().catch(() => {});
  }

  ui.whenReady(() => {
    // Jobs are the owner's; other roles do not see the section.
    const role = IW.project.info && IW.project.info.role;
    if (role && role !== "owner") {
      section.hidden = true;
      return;
    }
    use({ kind: "project",
          base: ui.prefix + "/api/projects/" + encodeURIComponent(IW.project.id) + "/jobs" });
  });
})();
