// ilastik-web extension, part 7: who is on the project, and what this browser may do.
//
// A "People" section lists everyone with the project open (pushed by the server as
// "presence" events on the project's WebSocket), with their role; this browser's own entry
// is marked "(you)". With the viewer role, a notice says so and painting is switched off
// (the server refuses it anyway; its message shows in the status line). A "Share" row
// lets owners create a link per role and copy it.
(function () {
  "use strict";
  const IW = window.ilastikWeb;
  if (!IW || IW.reloading || !IW.panel) return;
  const ui = IW.panel;
  const el = ui.el;

  const people = (IW.people = { me: null, list: [], role: null });
  const list = el("ul", { class: "iw-people", id: "iw-people" });
  const notice = el("div", { class: "iw-notice", id: "iw-role-notice", hidden: true });
  const roleSelect = el("select", { id: "iw-share-role", title: "Role the link grants" },
                        ...["viewer", "annotator", "owner"].map((r) => el("option", { value: r }, r)));
  const shareButton = el("button", { id: "iw-share", onclick: () => share() }, "Share link");
  const shareOut = el("input", { type: "text", id: "iw-share-url", class: "iw-wide",
                                 readonly: true, hidden: true,
                                 title: "Send this link; it is shown only now" });
  const shareRow = el("div", { class: "iw-row", hidden: true }, roleSelect, shareButton);
  ui.addSection(ui.section("People", notice, list, shareRow, shareOut));

  function render() {
    list.textContent = "";
    for (const person of people.list) {
      const you = people.me && person.id === people.me.id ? " (you)" : "";
      list.appendChild(el("li", { "data-id": person.id, "data-role": person.role || "" },
                          person.name + you + " — " + (person.role || "?")));
    }
  }

  function applyRole(role) {
    people.role = role;
    const viewOnly = role === "viewer";
    notice.hidden = !viewOnly;
    notice.textContent = viewOnly
      ? "View only: your link lets you look at this project, not paint or change it." : "";
    if (viewOnly && IW.brush && IW.brush.paintMode) IW.brush.set({ paintMode: false });
    shareRow.hidden = role !== "owner";
  }

  async function share() {
    const link = await ui.request("POST", "/" + encodeURIComponent(IW.project.id) + "/links",
                                  { role: roleSelect.value });
    shareOut.hidden = false;
    shareOut.value = link.url;
    shareOut.select();
  }

  ui.onEvent((event) => {
    if (event.kind === "presence") {
      people.list = event.payload.people || [];
      render();
    } else if (event.kind === "hello") {
      applyRole(event.payload.role);
    }
  });

  ui.whenReady(async () => {
    try {
      people.me = await ui.requestUrl("GET", ui.prefix + "/api/me");
    } catch (e) {
      return;
    }
    if (IW.project.info) applyRole(IW.project.info.role);
    render();
  });
})();
