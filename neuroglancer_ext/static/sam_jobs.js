// ilastik-web extension, part 8: SAM batch jobs of the project (owner only).
//
// "Fine-tune" starts micro-sam's training of the chosen SAM model on a tiff-layout training
// set (a folder on the server, e.g. an exported training set) as a job on the chosen
// engine; "Embed volume" precomputes the embeddings of all (or the listed) z slices into the
// server's embedding cache. Both appear in the Jobs list with their progress (step, loss);
// a finished fine-tuning gets a "Use as SAM model" button, after which the SAM section
// offers (and selects) the new model. It talks to the Jobs list's target (jobs.js):
// /api/projects/<id>/jobs/sam-*, or on a collection server /api/collection/jobs/sam-*, where
// an empty training set trains on every annotated item and "Embed" embeds every item.
(function () {
  "use strict";
  const IW = window.ilastikWeb;
  if (!IW || IW.reloading || !IW.panel || !IW.jobs) return;
  const ui = IW.panel;
  const el = ui.el;
  const url = (rest) => IW.jobs.target.base + rest;

  const samJobs = (IW.samJobs = { lastJob: null });

  const engineSelect = el("select", { id: "iw-sam-job-engine",
                                      title: "Where the job runs (configured engines)" });
  const setInput = el("input", { type: "text", id: "iw-sam-job-set", class: "iw-wide",
                                 placeholder: "training set folder (train/images, labels)",
                                 title: "A tiff-layout training set on the server" });
  const nameInput = el("input", { type: "text", id: "iw-sam-job-name",
                                  placeholder: "new model name",
                                  title: "The name the fine-tuned model is offered under" });
  const stepsInput = el("input", { type: "number", id: "iw-sam-job-steps", min: "1",
                                   value: "100", title: "Training steps" });
  const slicesInput = el("input", { type: "text", id: "iw-sam-job-slices", class: "iw-wide",
                                    placeholder: "slices to embed, e.g. 0,5,9 (default: all)",
                                    title: "z slices to embed (empty: every slice)" });
  const tuneButton = el("button", { id: "iw-sam-job-finetune", onclick: () => finetune() },
                        "Fine-tune");
  const embedButton = el("button", { id: "iw-sam-job-embed", onclick: () => embed() },
                         "Embed volume");

  ui.addSection(ui.section("SAM jobs",
    el("div", { class: "iw-row" }, engineSelect, nameInput, stepsInput, tuneButton),
    el("div", { class: "iw-row" }, setInput),
    el("div", { class: "iw-row" }, slicesInput, embedButton)));

  async function submit(kind, body, button) {
    if (engineSelect.value) body.engine = engineSelect.value;
    button.disabled = true;
    try {
      const job = await ui.requestUrl("POST", url("/" + kind), body);
      samJobs.lastJob = job;
      ui.status("job " + job.id + " submitted: " + kind + " on " + job.engine);
      await IW.jobs.refresh();
    } catch (e) {
      // request() put the server's message in the status line
    } finally {
      button.disabled = false;
    }
  }

  function finetune() {
    const body = { name: nameInput.value.trim(),
                   settings: { iterations: Math.max(1, parseInt(stepsInput.value, 10) || 1) } };
    const set = setInput.value.trim();
    if (set || IW.jobs.target.kind === "project") body.training_set = set;
    if (IW.sam && IW.sam.model) body.model = IW.sam.model;
    submit("sam-finetune", body, tuneButton);
  }

  function embed() {
    const body = {};
    const text = slicesInput.value.trim();
    if (text) body.slices = text.split(/[\s,]+/).filter(Boolean).map((s) => parseInt(s, 10));
    if (IW.sam && IW.sam.model) body.model = IW.sam.model;
    submit("sam-embeddings", body, embedButton);
  }

  async function useModel(job) {
    try {
      const result = await ui.requestUrl("POST", url("/" + encodeURIComponent(job.id) +
                                                     "/sam-model"));
      if (IW.sam && IW.sam.loadModels) {
        await IW.sam.loadModels();
        IW.sam.model = result.model;
        const select = document.getElementById("iw-sam-model");
        if (select) select.value = result.model;
      }
      ui.status("SAM model " + result.model + " is ready for prompts");
    } catch (e) {
      // shown in the status line
    }
  }

  /** Extra buttons of a job row in the Jobs list (called by jobs.js). */
  samJobs.actions = (job) => {
    if (job.kind !== "sam-finetune" || job.state !== "DONE") return [];
    return [el("button", { class: "iw-job-sam-model", onclick: () => useModel(job),
                           title: "Offer this checkpoint as a SAM model for prompts" },
               "Use as SAM model")];
  };

  /** On a collection server: fine-tune on its annotations, embed its items. */
  samJobs.useCollection = () => {
    setInput.placeholder = "training set name (empty: every annotated item)";
    setInput.title = "A training set the collection exported; empty: export one now";
    slicesInput.hidden = true;
    embedButton.textContent = "Embed items";
    loadEngines();
  };

  async function loadEngines() {
    try {
      const data = await ui.requestUrl("GET", ui.prefix + "/api/engines");
      engineSelect.replaceChildren(...(data.engines || []).map((e) =>
        el("option", { value: e.name }, e.name + " (" + e.kind + ")")));
    } catch (e) {
      // no engines listed: the server's default (local) is used
    }
  }

  ui.whenReady(async () => {
    const role = IW.project.info && IW.project.info.role;
    if (role && role !== "owner") {
      tuneButton.closest("section").hidden = true;
      return;
    }
    try {
      const data = await ui.requestUrl("GET", ui.prefix + "/api/engines");
      engineSelect.replaceChildren(...(data.engines || []).map((e) =>
        el("option", { value: e.name }, e.name + " (" + e.kind + ")")));
    } catch (e) {
      // no engines listed: the server's default (local) is used
    }
  });
})();
