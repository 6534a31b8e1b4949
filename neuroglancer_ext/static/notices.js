// ilastik-web extension: notices about the data — chunks that could not be read (shown
// empty) and source warnings such as a voxel size missing from the metadata.
//
// Polls /api/notices (a small JSON document) and lists each notice in a "Notices" section of
// the side panel, naming the source and the region, so a blank patch is never a mystery.
(function () {
  "use strict";
  const IW = window.ilastikWeb;
  if (!IW || IW.reloading || !IW.panel) return;
  const { el, section, prefix } = IW.panel;
  const POLL_MS = 3000;
  const SHOWN = 20; // bad chunks listed one by one; more are counted

  const list = el("ul", { class: "iw-notice-list", id: "iw-notice-list" });
  const box = section("Notices", list);
  box.id = "iw-notices";
  box.classList.add("iw-notices");
  box.hidden = true;
  IW.panel.addSection(box);
  box.parentNode.insertBefore(box, box.parentNode.children[1]); // at the top, under the header
  const notices = (IW.notices = { warnings: [], badChunks: [], polls: 0 });
  let shownKey = "";

  function render(data) {
    const key = JSON.stringify(data);
    if (key === shownKey) return;
    shownKey = key;
    list.replaceChildren();
    for (const w of data.warnings) {
      list.appendChild(el("li", { class: "iw-notice iw-notice-warning" }, w.message));
    }
    const bad = data.bad_chunks;
    const bySource = new Map();
    for (const chunk of bad) {
      if (!bySource.has(chunk.source)) bySource.set(chunk.source, []);
      bySource.get(chunk.source).push(chunk);
    }
    for (const [source, chunks] of bySource) {
      const items = chunks.slice(0, SHOWN).map((c) =>
        el("li", { class: "iw-notice-region" }, c.region + ": " + c.reason));
      const more = chunks.length > SHOWN ? chunks.length - SHOWN : 0;
      if (more) items.push(el("li", {}, "and " + more + " more"));
      list.appendChild(el("li", { class: "iw-notice iw-notice-error" },
        chunks.length + " unreadable chunk" + (chunks.length === 1 ? "" : "s") + " in " +
        source + ", shown empty:", el("ul", {}, ...items)));
    }
    if (data.bad_chunks_not_listed) {
      list.appendChild(el("li", { class: "iw-notice iw-notice-error" },
        data.bad_chunks_not_listed + " further unreadable chunks (see the server log)"));
    }
    box.hidden = list.children.length === 0;
  }

  async function poll() {
    try {
      const response = await fetch(prefix + "/api/notices");
      if (response.ok) {
        const data = await response.json();
        notices.warnings = data.warnings;
        notices.badChunks = data.bad_chunks;
        render(data);
      }
    } catch (e) {
      // the connection status line reports a lost server; keep polling quietly
    }
    notices.polls++;
    setTimeout(poll, document.hidden ? 4 * POLL_MS : POLL_MS);
  }
  poll();
})();
