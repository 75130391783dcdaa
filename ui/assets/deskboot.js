// deskboot's web UI: small enhancements over forms that work without them.
// The page's CSP allows no inline script, so everything is wired here.
"use strict";

// A suggested user fills the key's target, and its label when empty.
document.addEventListener("click", function (event) {
  const pick = event.target.closest(".pick");
  if (!pick) return;
  const slot = pick.closest(".slot");
  const value = slot.querySelector('input[name="k_value"]');
  const label = slot.querySelector('input[name="k_label"]');
  const type = slot.querySelector('select[name="k_type"]');
  value.value = pick.dataset.value;
  if (label && label.value.trim() === "") label.value = pick.dataset.label;
  if (type && type.value === "none") type.value = "blf";
  slot.querySelector(".pick-list").replaceChildren();
  (label || value).focus();
});

// After a drag, each row's position name and move buttons follow its new place.
function renumber(form) {
  form.querySelectorAll(".faceplate").forEach(function (group) {
    group.querySelectorAll(".position").forEach(function (position, i) {
      position.textContent = position.textContent.replace(/\d+$/, String(i + 1));
    });
  });
  form.querySelectorAll(".slot").forEach(function (slot, row) {
    slot.querySelectorAll('button[name="move"]').forEach(function (button) {
      button.value = row + ":" + button.value.split(":")[1];
    });
  });
  if (!form.querySelector(".unsaved")) {
    const note = document.createElement("p");
    note.className = "warning unsaved";
    note.textContent = "Not saved yet.";
    form.prepend(note);
  }
}

// Keys can be dragged within their phone or module, where SortableJS runs.
function enhance(root) {
  if (typeof Sortable === "undefined") return;
  root.querySelectorAll('ol.slots[data-sortable="true"]').forEach(function (list) {
    const group = list.closest(".faceplate");
    if (!group.id) group.id = "faceplate-" + Math.random().toString(36).slice(2);
    Sortable.create(list, {
      group: group.id,
      handle: ".position",
      onEnd: function () { renumber(list.closest("form")); },
    });
  });
}

if (typeof htmx !== "undefined") {
  htmx.onLoad(enhance);
} else {
  document.addEventListener("DOMContentLoaded", function () { enhance(document); });
}

// The import page's file picker, shown where scripts run: the chosen file's
// text goes into the form's text area, which is what the form posts.
document.querySelectorAll("input[type=file][data-fills]").forEach(function (picker) {
  picker.closest(".file-pick").hidden = false;
  picker.addEventListener("change", function () {
    const file = picker.files[0];
    if (!file) return;
    file.text().then(function (text) {
      document.getElementById(picker.dataset.fills).value = text;
    });
  });
});

// Enter in a key tool's field previews that tool, rather than pressing the
// form's first button (Save and resync).
document.addEventListener("keydown", function (event) {
  if (event.key !== "Enter" || event.target.tagName !== "INPUT") return;
  const tool = event.target.closest(".key-tools fieldset");
  const preview = tool && tool.querySelector('button[value$="preview"]');
  if (!preview) return;
  event.preventDefault();
  preview.click();
});
// The template editor: the gutter keeps one number a line and scrolls with
// the source; after a validation the caret goes to the line and column that
// failed.
function templateEditor(root) {
  const source = root.querySelector("textarea#source[data-error-line]");
  if (!source || source.dataset.enhanced) return;
  source.dataset.enhanced = "true";
  const gutter = source.parentElement.querySelector(".gutter");
  function renumber() {
    const count = source.value.split("\n").length;
    while (gutter.children.length < count) {
      const number = document.createElement("li");
      number.textContent = String(gutter.children.length + 1);
      gutter.appendChild(number);
    }
    while (gutter.children.length > count) gutter.lastElementChild.remove();
  }
  source.addEventListener("input", renumber);
  source.addEventListener("scroll", function () { gutter.scrollTop = source.scrollTop; });
  const line = Number(source.dataset.errorLine);
  if (line > 0) {
    const lines = source.value.split("\n");
    let at = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) at += lines[i].length + 1;
    const column = Math.max(1, Number(source.dataset.errorColumn) || 1);
    at += Math.min(column - 1, (lines[line - 1] || "").length);
    source.focus();
    source.setSelectionRange(at, at);
    const marked = document.getElementById("marked-line");
    if (marked) marked.scrollIntoView({ block: "center" });
  }
}

if (typeof htmx !== "undefined") {
  htmx.onLoad(templateEditor);
} else {
  document.addEventListener("DOMContentLoaded", function () { templateEditor(document); });
}

// Import's Apply, where scripts run: the same form is posted to its
// streaming route, which answers a JSON line per progress report and then
// the outcome; the bar follows the reports and the result page's content
// replaces this one's. An answer that is no stream (a refused or expired
// dry run) sends the form the plain way, which shows the page saying why.
function streamedApply(form) {
  const shown = form.querySelector("#apply-progress");
  const bar = shown.querySelector("progress");
  const stage = shown.querySelector(".stage");
  form.querySelector("button[type=submit]").disabled = true;
  shown.hidden = false;
  function onLine(line) {
    if (line.stage) {
      bar.max = Math.max(1, line.total);
      bar.value = line.done;
      stage.textContent = line.stage + " " + line.done + " of " + line.total;
      return;
    }
    if (line.answer && line.answer.html) {
      const page = new DOMParser().parseFromString(line.answer.html, "text/html");
      document.title = page.title;
      document.getElementById("main").replaceWith(page.getElementById("main"));
      return;
    }
    stage.textContent = (line.answer && line.answer.error) || "The import failed.";
    stage.className = "stage error";
  }
  fetch(form.dataset.stream, {
    method: "POST",
    body: new URLSearchParams(new FormData(form)),
    headers: { Accept: "application/x-ndjson" },
    credentials: "same-origin",
  }).then(function (response) {
    const type = response.headers.get("Content-Type") || "";
    if (!response.ok || !type.startsWith("application/x-ndjson") || !response.body) {
      form.submit();
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    function read() {
      return reader.read().then(function (chunk) {
        pending += decoder.decode(chunk.value || new Uint8Array(), { stream: !chunk.done });
        const lines = pending.split("\n");
        pending = lines.pop();
        lines.filter(Boolean).forEach(function (line) { onLine(JSON.parse(line)); });
        if (!chunk.done) return read();
      });
    }
    return read();
  }).catch(function () {
    stage.textContent = "The connection was lost: reload the devices list to see whether the import was written.";
    stage.className = "stage error";
  });
}

document.addEventListener("submit", function (event) {
  const form = event.target;
  if (!form.dataset.stream || typeof fetch === "undefined") return;
  event.preventDefault();
  streamedApply(form);
});
