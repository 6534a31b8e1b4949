// ilastik-web extension, part 7: the Export section of the side panel.
//
// "Download .ilp" saves the project as a desktop ilastik 1.4 project (labels, classes and
// colours, feature selection; ilastik retrains from the labels). "Labels → OME-Zarr" writes
// the painted labels, with class colours and names, under the project's exports/ folder on
// the server and shows where. They call /api/projects/<id>/export.ilp and
// /api/projects/<id>/exports/labels.
(function () {
  "use strict";
  const IW = window.ilastikWeb;
  if (!IW || IW.reloading || !IW.panel) return;
  const ui = IW.panel;
  const el = ui.el;

  const projectPath = (rest) => "/" + encodeURIComponent(IW.project.id) + rest;
  const ilpLink = el("a", { id: "iw-export-ilp", class: "iw-button", download: "",
                            title: "Save the project as a desktop ilastik .ilp " +
                                   "(labels, classes, features; ilastik retrains)" },
                     "Download .ilp");
  const labelsButton = el("button", { id: "iw-export-labels",
                                      title: "Write the painted labels as OME-Zarr with " +
                                             "class colours (project's exports/ folder)",
                                      onclick: () => exportLabels() },
                          "Labels → OME-Zarr");
  const result = el("div", { id: "iw-export-result", class: "iw-export-result" });

  ui.addSection(ui.section("Export", el("div", { class: "iw-row" }, ilpLink, labelsButton),
                           result));

  async function exportLabels() {
    labelsButton.disabled = true;
    result.textContent = "writing labels…";
    try {
      const written = await ui.request("POST", projectPath("/exports/labels"));
      result.textContent = "labels written to " + written.path;
      ui.status("labels exported (revision " + written.revision + ")");
    } catch (e) {
      result.textContent = ""; // request() put the server's message in the status line
    } finally {
      labelsButton.disabled = false;
    }
  }

  ui.whenReady(() => {
    ilpLink.href = ui.prefix + "/api/projects" + projectPath("/export.ilp");
    ilpLink.setAttribute("download", IW.project.id + ".ilp");
  });
})();
