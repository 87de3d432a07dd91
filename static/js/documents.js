// Documents pages: upload many files with fetch, follow each version's ingestion live,
// retry and cancel without reloading. Without this script the same forms post normally.
(function () {
  "use strict";

  const POLL_MS = 1000;
  const POLL_RETRY_MS = 5000;
  const IDS_PER_POLL = 200;
  const PARALLEL_UPLOADS = 3;

  const page = document.querySelector("[data-documents-page]");
  if (!page || !window.fetch) {
    return;
  }
  const statusUrl = page.dataset.statusUrl;
  let pollTimer = null;

  function csrfToken() {
    const input = page.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function role(root, name) {
    return root.querySelector('[data-role="' + name + '"]');
  }

  async function readJson(response) {
    const type = response.headers.get("Content-Type") || "";
    if (!type.includes("application/json")) {
      // A redirect to the login page lands here: the session has ended.
      throw new Error("Your session has ended. Reload the page and log in again.");
    }
    const body = await response.json();
    if (!response.ok) {
      throw new Error(body.detail || "The server refused the request (" + response.status + ").");
    }
    return body;
  }

  // ---- A version's status: badge, progress, reason, buttons -------------------------------

  function drawVersion(widget, state) {
    widget.dataset.versionId = String(state.id);
    widget.dataset.final = state.final ? "true" : "false";
    const badge = role(widget, "badge");
    badge.textContent = state.status_label;
    badge.className = "badge badge-" + state.status.toLowerCase();

    const line = role(widget, "progress-line");
    const progress = role(widget, "progress");
    const count = role(widget, "count");
    line.hidden = state.final;
    if (state.chunks_total > 0) {
      progress.max = state.chunks_total;
      progress.value = state.chunks_done;
      count.textContent = state.chunks_done + " of " + state.chunks_total + " passages";
    } else {
      progress.removeAttribute("value");
      count.textContent = "";
    }

    const message = role(widget, "message");
    message.textContent = state.message;
    message.hidden = !state.message;

    const retry = role(widget, "retry");
    retry.action = state.retry_url;
    retry.hidden = !state.can_retry;
    const cancel = role(widget, "cancel");
    cancel.action = state.cancel_url;
    cancel.hidden = !state.can_cancel;

    if (state.status === "READY") {
      page.querySelectorAll('[data-chunks-for-version="' + state.id + '"]').forEach(function (cell) {
        cell.textContent = String(state.chunks_total);
      });
    }
  }

  function drawEverywhere(state) {
    page
      .querySelectorAll('[data-version-status][data-version-id="' + state.id + '"]')
      .forEach(function (widget) {
        drawVersion(widget, state);
      });
  }

  // ---- The list of all documents, redrawn when an upload adds to it or finishes ---------------

  const listing = page.querySelector("[data-document-listing]");
  let listingTimer = null;

  async function redrawListing() {
    listingTimer = null;
    try {
      const response = await fetch(window.location.href, {
        headers: { Accept: "text/html" },
        credentials: "same-origin",
      });
      if (!response.ok) {
        return;
      }
      const fresh = new DOMParser()
        .parseFromString(await response.text(), "text/html")
        .querySelector("[data-document-listing]");
      if (fresh) {
        listing.replaceChildren(...Array.from(fresh.childNodes));
        schedulePoll(POLL_MS);
      }
    } catch (error) {
      // The list stays as it was; the next change or a reload redraws it.
    }
  }

  function listingChanged() {
    if (listing && listingTimer === null) {
      // Several files finishing together redraw the list once.
      listingTimer = window.setTimeout(redrawListing, 300);
    }
  }

  // ---- Polling while anything is still moving -----------------------------------------------

  function runningIds() {
    const ids = new Set();
    page.querySelectorAll('[data-version-status][data-final="false"]').forEach(function (widget) {
      if (widget.dataset.versionId) {
        ids.add(widget.dataset.versionId);
      }
    });
    return Array.from(ids);
  }

  function schedulePoll(delay) {
    if (pollTimer === null && runningIds().length > 0) {
      pollTimer = window.setTimeout(poll, delay);
    }
  }

  async function poll() {
    pollTimer = null;
    const ids = runningIds();
    let delay = POLL_MS;
    try {
      for (let start = 0; start < ids.length; start += IDS_PER_POLL) {
        const batch = ids.slice(start, start + IDS_PER_POLL);
        const response = await fetch(statusUrl + "?ids=" + batch.join(","), {
          headers: { Accept: "application/json" },
          credentials: "same-origin",
        });
        const body = await readJson(response);
        const seen = new Set();
        body.versions.forEach(function (state) {
          seen.add(String(state.id));
          if (state.final) {
            listingChanged();
          }
          drawEverywhere(state);
        });
        // A version that is no longer reported belongs to a deleted document: stop asking.
        batch.forEach(function (id) {
          if (!seen.has(id)) {
            page.querySelectorAll('[data-version-id="' + id + '"]').forEach(function (widget) {
              widget.dataset.final = "true";
            });
          }
        });
      }
    } catch (error) {
      delay = POLL_RETRY_MS;
    }
    schedulePoll(delay);
  }

  // ---- Retry and cancel ------------------------------------------------------------------

  page.addEventListener("submit", async function (event) {
    const form = event.target;
    if (!form.matches("[data-version-action]")) {
      return;
    }
    event.preventDefault();
    const widget = form.closest("[data-version-status]");
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
        credentials: "same-origin",
      });
      drawEverywhere(await readJson(response));
      schedulePoll(POLL_MS);
    } catch (error) {
      const message = role(widget, "message");
      message.textContent = error.message;
      message.hidden = false;
    } finally {
      button.disabled = false;
    }
  });

  // ---- Upload ------------------------------------------------------------------------------

  const uploadForm = page.querySelector("[data-upload-form]");
  if (uploadForm) {
    const fileInput = uploadForm.querySelector("input[type=file]");
    const dropZone = uploadForm.querySelector("[data-drop-zone]");
    const selection = role(dropZone, "selection");
    const results = page.querySelector("[data-upload-results]");
    const rowTemplate = page.querySelector("template[data-upload-result-template]");

    function describeSelection() {
      const count = fileInput.files.length;
      selection.textContent =
        count === 0 ? "" : count === 1 ? "1 file selected: " + fileInput.files[0].name
          : count + " files selected.";
    }

    fileInput.addEventListener("change", describeSelection);

    ["dragenter", "dragover"].forEach(function (name) {
      dropZone.addEventListener(name, function (event) {
        event.preventDefault();
        dropZone.classList.add("is-dragging");
      });
    });
    ["dragleave", "drop"].forEach(function (name) {
      dropZone.addEventListener(name, function () {
        dropZone.classList.remove("is-dragging");
      });
    });
    dropZone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files.length > 0) {
        fileInput.files = event.dataTransfer.files;
        describeSelection();
      }
    });

    function newResultRow(file) {
      const row = rowTemplate.content.firstElementChild.cloneNode(true);
      role(row, "name").textContent = file.name;
      const widget = row.querySelector("[data-version-status]");
      role(widget, "badge").textContent = "Uploading";
      role(widget, "badge").className = "badge badge-uploading";
      role(row, "state").hidden = false;
      results.append(row);
      return row;
    }

    function showRefusal(row, reason) {
      row.classList.add("upload-refused");
      const badge = role(row, "badge");
      badge.textContent = "Refused";
      badge.className = "badge badge-refused";
      const error = role(row, "error");
      error.textContent = reason;
      error.hidden = false;
    }

    function showResult(row, result) {
      if (result.error || !result.version) {
        showRefusal(row, result.error || "The file was not stored.");
        return;
      }
      const link = role(row, "link");
      link.href = result.version.document_url;
      link.hidden = false;
      const note = role(row, "note");
      note.textContent = result.note;
      note.hidden = !result.note;
      drawVersion(row.querySelector("[data-version-status]"), result.version);
      listingChanged();
      schedulePoll(POLL_MS);
    }

    async function uploadOne(file, readers) {
      const row = newResultRow(file);
      const body = new FormData();
      body.append("files", file, file.name);
      readers.forEach(function (pair) {
        body.append(pair[0], pair[1]);
      });
      try {
        const response = await fetch(uploadForm.dataset.uploadUrl, {
          method: "POST",
          body: body,
          headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
          credentials: "same-origin",
        });
        const payload = await readJson(response);
        showResult(row, payload.results[0]);
      } catch (error) {
        showRefusal(row, error.message);
      }
    }

    uploadForm.addEventListener("submit", async function (event) {
      event.preventDefault();
      const files = Array.from(fileInput.files);
      if (files.length === 0) {
        selection.textContent = "Choose at least one file to upload.";
        fileInput.focus();
        return;
      }
      const readers = Array.from(new FormData(uploadForm).entries()).filter(function (pair) {
        return pair[0] === "groups" || pair[0] === "everyone";
      });
      if (readers.length === 0) {
        // The server refuses it too; saying so here keeps the chosen files.
        selection.textContent =
          "Choose who may read these files: tick at least one group or Everyone.";
        const firstReader = uploadForm.querySelector("fieldset.readers input");
        if (firstReader) {
          firstReader.focus();
        }
        return;
      }
      fileInput.value = "";
      describeSelection();
      // A few at a time: each file gets its own result row as soon as it is stored.
      const queue = files.slice();
      async function worker() {
        while (queue.length > 0) {
          await uploadOne(queue.shift(), readers);
        }
      }
      const workers = [];
      for (let index = 0; index < Math.min(PARALLEL_UPLOADS, files.length); index += 1) {
        workers.push(worker());
      }
      await Promise.all(workers);
    });
  }

  schedulePoll(0);
})();
