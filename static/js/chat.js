// The ask page: stream an answer over fetch (Server-Sent Events in a POST response), show its
// reasoning and text as they arrive, then swap in the server-rendered answer with its sources.
// Without this script the ask form posts normally and the page reloads with the answer.
(function () {
  "use strict";

  const page = document.querySelector("[data-chat-page]");
  if (!page || !window.fetch || !window.AbortController || !window.TextDecoder) {
    return;
  }
  const form = page.querySelector("[data-ask-form]");
  const textarea = form.querySelector("textarea[name=question]");
  const conversationInput = form.querySelector("input[name=conversation_id]");
  const thread = page.querySelector("[data-thread]");
  const answerTemplate = document.querySelector("template[data-answer-template]");
  const announcer = role(page, "announcer");
  const askButton = role(form, "ask");
  const stopButton = role(form, "stop");
  const formError = role(form, "form-error");
  const counter = role(form, "count");
  const maxChars = Number(textarea.getAttribute("maxlength")) || 0;
  let running = null;
  // The script checks the question itself and says what is wrong next to the box.
  form.noValidate = true;

  function role(root, name) {
    return root.querySelector('[data-role="' + name + '"]');
  }

  function csrfToken() {
    const input = form.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function announce(text) {
    announcer.textContent = text;
  }

  function showFormError(message) {
    formError.textContent = message;
    formError.hidden = !message;
  }

  // ---- The question box ---------------------------------------------------------------------

  function updateCounter() {
    const length = textarea.value.length;
    counter.textContent = length > 0 ? " (" + length + " of " + maxChars + " used)" : "";
  }

  textarea.addEventListener("input", function () {
    updateCounter();
    if (textarea.value.trim()) {
      showFormError("");
    }
  });

  textarea.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (running) {
      return;
    }
    const question = textarea.value.trim();
    if (!question) {
      showFormError("Please type a question.");
      textarea.focus();
      return;
    }
    if (maxChars && question.length > maxChars) {
      showFormError("The question is too long; the limit is " + maxChars + " characters.");
      return;
    }
    showFormError("");
    ask(question);
  });

  function stop() {
    if (running) {
      running.stopped = true;
      running.controller.abort();
    }
  }

  stopButton.addEventListener("click", stop);
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && running) {
      stop();
    }
  });

  // ---- One streamed answer --------------------------------------------------------------------

  function newAnswerItem(question) {
    const item = answerTemplate.content.firstElementChild.cloneNode(true);
    role(item, "question").textContent = question;
    thread.append(item);
    item.scrollIntoView({ block: "nearest" });
    return item;
  }

  function setBusy(busy) {
    askButton.disabled = busy;
    askButton.setAttribute("aria-disabled", String(busy));
    stopButton.hidden = !busy;
    if (!busy) {
      textarea.focus();
    }
  }

  function showNotice(item, message) {
    const notice = role(item, "notice");
    if (notice) {
      notice.textContent = message;
      notice.hidden = false;
    }
  }

  function finishStreaming(item, progressText) {
    const article = item.querySelector("article");
    if (article) {
      article.classList.remove("is-streaming");
      article.removeAttribute("aria-busy");
    }
    const progress = role(item, "progress");
    if (progress) {
      progress.textContent = progressText;
      progress.hidden = !progressText;
    }
  }

  function rememberConversation(data) {
    const isNew = conversationInput.value !== String(data.conversation_id);
    conversationInput.value = String(data.conversation_id);
    if (isNew && data.conversation_url) {
      // A reload or a shared link opens the conversation this answer now belongs to.
      window.history.replaceState(null, "", data.conversation_url);
      if (data.title) {
        const heading = page.querySelector("#chat-heading");
        if (heading) {
          heading.textContent = data.title;
        }
        document.title = data.title + " · Knowledge Assistant";
      }
      const label = form.querySelector("label[for=question]");
      if (label) {
        label.textContent = "Follow-up question";
      }
      addToSidebar(data.conversation_url, data.title);
    }
  }

  function addToSidebar(url, title) {
    const holder = page.querySelector("[data-conversation-list]");
    if (!holder || holder.querySelector('a[href="' + url + '"]')) {
      return;
    }
    const empty = role(holder, "no-conversations");
    if (empty) {
      empty.remove();
    }
    holder.querySelectorAll("[aria-current]").forEach(function (link) {
      link.removeAttribute("aria-current");
      link.closest("li").classList.remove("is-current");
    });
    let list = holder.querySelector("ol.conversation-list");
    const firstGroup = holder.querySelector(".conversation-group");
    if (!list || !firstGroup || firstGroup.textContent !== "Today") {
      const heading = document.createElement("h3");
      heading.className = "conversation-group";
      heading.textContent = "Today";
      heading.id = "conversation-group-today";
      list = document.createElement("ol");
      list.className = "conversation-list";
      list.setAttribute("aria-labelledby", heading.id);
      holder.prepend(heading, list);
    }
    const entry = document.createElement("li");
    entry.className = "conversation-item is-current";
    const link = document.createElement("a");
    link.className = "conversation-link";
    link.href = url;
    link.textContent = title;
    link.setAttribute("aria-current", "page");
    entry.append(link);
    list.prepend(entry);
  }

  async function swapInRendered(item, data) {
    try {
      const response = await fetch(data.fragment_url, {
        headers: { Accept: "text/html" },
        credentials: "same-origin",
      });
      if (!response.ok) {
        throw new Error("fragment " + response.status);
      }
      const holder = document.createElement("template");
      holder.innerHTML = (await response.text()).trim();
      const rendered = holder.content.querySelector("article");
      if (rendered) {
        item.replaceChildren(rendered);
        enhance(rendered);
        return;
      }
    } catch (error) {
      // The streamed text stays; a reload shows the rendered answer.
    }
    finishStreaming(item, "");
  }

  function handleEvent(item, kind, data) {
    const answer = role(item, "answer");
    const reasoningPanel = role(item, "reasoning-panel");
    const reasoning = role(item, "reasoning");
    const progress = role(item, "progress");
    if (kind === "meta") {
      rememberConversation(data);
      item.dataset.streamingAnswerId = data.answer_id ? String(data.answer_id) : "";
      role(item, "extractive-label").hidden = data.mode !== "extractive";
      progress.textContent =
        data.sources > 0 ? "Writing the answer from " + data.sources + " passages…"
          : "No passage you may read matched.";
    } else if (kind === "reasoning") {
      reasoningPanel.hidden = false;
      reasoning.textContent += data.text;
    } else if (kind === "reclassify") {
      // What looked like reasoning was the answer all along.
      reasoning.textContent = "";
      reasoningPanel.hidden = true;
      streamedText.set(item, data.text);
      drawStreamedAnswer(item, answer);
    } else if (kind === "answer") {
      streamedText.set(item, (streamedText.get(item) || "") + data.text);
      drawStreamedAnswer(item, answer);
    } else if (kind === "notice") {
      showNotice(item, data.text);
    } else if (kind === "error") {
      showNotice(item, data.message);
    }
  }

  function parseEvent(block) {
    let kind = "message";
    const dataLines = [];
    block.split(/\r?\n/).forEach(function (line) {
      if (line.startsWith("event:")) {
        kind = line.slice(6).trim();
      } else if (line.startsWith("data:")) {
        dataLines.push(line.slice(5).replace(/^ /, ""));
      }
    });
    if (dataLines.length === 0) {
      return null;
    }
    return { kind: kind, data: JSON.parse(dataLines.join("\n")) };
  }

  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) {
        break;
      }
      buffer += decoder.decode(chunk.value, { stream: true });
      let boundary = buffer.search(/\r?\n\r?\n/);
      while (boundary !== -1) {
        const block = buffer.slice(0, boundary);
        buffer = buffer.slice(boundary).replace(/^\r?\n\r?\n/, "");
        const event = parseEvent(block);
        if (event) {
          await onEvent(event.kind, event.data);
        }
        boundary = buffer.search(/\r?\n\r?\n/);
      }
    }
  }

  async function refusal(response) {
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("application/json")) {
      const body = await response.json();
      return body.detail || "The server refused the question (" + response.status + ").";
    }
    if (response.status === 403 || response.redirected) {
      return "Your session has ended. Reload the page and log in again.";
    }
    return "The server could not answer (" + response.status + "). Your question is kept; try again.";
  }

  async function ask(question) {
    const controller = new AbortController();
    running = { controller: controller, stopped: false };
    // The question leaves the box while it is answered; it comes back if no answer is written.
    const typed = textarea.value;
    textarea.value = "";
    updateCounter();
    setBusy(true);
    let item = null;
    let outcome = "";
    try {
      const response = await fetch(page.dataset.streamUrl, {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          Accept: "text/event-stream",
          "X-CSRFToken": csrfToken(),
        },
        body: JSON.stringify({
          question: question,
          conversation_id: conversationInput.value || null,
          documents: chosen("documents"),
          groups: chosen("groups"),
        }),
        credentials: "same-origin",
        signal: controller.signal,
      });
      const type = response.headers.get("Content-Type") || "";
      if (!response.ok || !type.includes("text/event-stream")) {
        showFormError(await refusal(response));
        outcome = "refused";
        return;
      }
      item = newAnswerItem(question);
      announce("Answering…");
      await readEvents(response, async function (kind, data) {
        if (kind === "done") {
          outcome = data.status;
          await swapInRendered(item, data);
          return;
        }
        if (kind === "error") {
          outcome = "failed";
        }
        handleEvent(item, kind, data);
      });
      if (!outcome) {
        outcome = "failed";
        showNotice(item, "The answer stopped unexpectedly. Your question is kept; try again.");
      }
    } catch (error) {
      if (running.stopped) {
        outcome = "cancelled";
        if (item) {
          showNotice(item, "Stopped. What was written so far is kept in the conversation.");
        }
      } else {
        outcome = "failed";
        const message = "The connection to the server was lost. Your question is kept; try again.";
        if (item) {
          showNotice(item, message);
        } else {
          showFormError(message);
        }
      }
    } finally {
      if (item && outcome !== "answered" && outcome !== "abstained") {
        finishStreaming(item, "");
      }
      // A question that got its answer stays out of the box; any other outcome puts it back.
      if (outcome !== "answered" && outcome !== "abstained" && !textarea.value) {
        textarea.value = typed || question;
        updateCounter();
      }
      announce(
        outcome === "answered" ? "The answer is complete."
          : outcome === "abstained" ? "Your documents do not answer this question."
          : outcome === "cancelled" ? "Stopped." : outcome === "refused" ? "" : "No answer was written."
      );
      running = null;
      setBusy(false);
    }
  }

  // ---- Citations while streaming, their previews and the side panel ---------------------------

  const streamedText = new WeakMap();
  const CITATION = /\[(\d+(?:\s*,\s*\d+)*)\]/g;

  function passageUrl(answerId, n) {
    return "/passages/" + answerId + "/" + n + "/";
  }

  // The streamed text as text nodes, with each [n] a link to its passage: nothing the model
  // writes becomes markup.
  function drawStreamedAnswer(item, target) {
    const text = streamedText.get(item) || "";
    const answerId = item.dataset.streamingAnswerId;
    if (!answerId) {
      target.textContent = text;
      return;
    }
    const parts = [];
    let position = 0;
    text.replace(CITATION, function (match, numbers, offset) {
      parts.push(document.createTextNode(text.slice(position, offset)));
      parts.push(document.createTextNode("["));
      numbers.split(",").forEach(function (number, index) {
        if (index > 0) {
          parts.push(document.createTextNode(", "));
        }
        const link = document.createElement("a");
        link.href = passageUrl(answerId, number.trim());
        link.title = "Open source " + number.trim();
        link.textContent = number.trim();
        parts.push(link);
      });
      parts.push(document.createTextNode("]"));
      position = offset + match.length;
      return match;
    });
    parts.push(document.createTextNode(text.slice(position)));
    target.replaceChildren.apply(target, parts);
  }

  const CITATION_LINK = /^\/passages\/(\d+)\/(\d+)\/$/;
  const previews = new Map();
  let previewBox = null;

  function citationOf(element) {
    const link = element && element.closest ? element.closest("a[href]") : null;
    if (!link || !thread.contains(link) || !link.closest(".answer-text, .answer-streaming, .citation-list")) {
      return null;
    }
    const match = CITATION_LINK.exec(link.getAttribute("href"));
    return match ? { link: link, answerId: match[1], n: match[2] } : null;
  }

  async function previewData(citation) {
    const key = citation.answerId + "/" + citation.n;
    if (!previews.has(key)) {
      previews.set(
        key,
        fetch(passageUrl(citation.answerId, citation.n) + "preview", {
          headers: { Accept: "application/json" },
          credentials: "same-origin",
        }).then(function (response) {
          if (!response.ok) {
            throw new Error("preview " + response.status);
          }
          return response.json();
        })
      );
    }
    return previews.get(key);
  }

  function hidePreview() {
    if (previewBox) {
      previewBox.remove();
      previewBox = null;
    }
  }

  async function showPreview(citation) {
    let data;
    try {
      data = await previewData(citation);
    } catch (error) {
      return;
    }
    hidePreview();
    const box = document.createElement("div");
    box.className = "passage-preview";
    box.setAttribute("role", "tooltip");
    box.id = "passage-preview";
    const title = document.createElement("p");
    title.className = "preview-title";
    title.textContent =
      "[" + data.n + "] " + data.title + (data.page ? " · page " + data.page : "") +
      (data.heading ? " · " + data.heading : "");
    const text = document.createElement("p");
    text.className = "preview-text";
    text.textContent = data.text + (data.truncated ? " …" : "");
    box.append(title, text);
    document.body.append(box);
    const place = citation.link.getBoundingClientRect();
    const left = Math.max(8, Math.min(place.left, window.innerWidth - box.offsetWidth - 8));
    box.style.left = left + window.scrollX + "px";
    box.style.top = place.bottom + window.scrollY + 6 + "px";
    citation.link.setAttribute("aria-describedby", box.id);
    previewBox = box;
  }

  thread.addEventListener("mouseover", function (event) {
    const citation = citationOf(event.target);
    if (citation) {
      showPreview(citation);
    }
  });
  thread.addEventListener("focusin", function (event) {
    const citation = citationOf(event.target);
    if (citation) {
      showPreview(citation);
    }
  });
  thread.addEventListener("mouseout", function (event) {
    if (citationOf(event.target)) {
      hidePreview();
    }
  });
  thread.addEventListener("focusout", function (event) {
    if (citationOf(event.target)) {
      hidePreview();
    }
  });

  let panel = null;
  let panelOpener = null;

  function closePanel() {
    if (panel) {
      panel.remove();
      panel = null;
      if (panelOpener) {
        panelOpener.focus();
      }
    }
  }

  async function openPanel(citation) {
    hidePreview();
    closePanel();
    panelOpener = citation.link;
    panel = document.createElement("aside");
    panel.className = "passage-panel";
    panel.setAttribute("aria-labelledby", "passage-panel-heading");
    panel.setAttribute("data-passage-panel", "");
    const head = document.createElement("div");
    head.className = "passage-panel-head";
    const heading = document.createElement("h2");
    heading.id = "passage-panel-heading";
    heading.tabIndex = -1;
    heading.textContent = "Source [" + citation.n + "]";
    const close = document.createElement("button");
    close.type = "button";
    close.className = "button button-small";
    close.textContent = "Close";
    close.addEventListener("click", closePanel);
    head.append(heading, close);
    const body = document.createElement("div");
    body.textContent = "Loading the passage…";
    panel.append(head, body);
    document.body.append(panel);
    heading.focus();
    try {
      const [data, response] = await Promise.all([
        previewData(citation),
        fetch(passageUrl(citation.answerId, citation.n) + "panel", {
          headers: { Accept: "text/html" },
          credentials: "same-origin",
        }),
      ]);
      if (!response.ok) {
        throw new Error("panel " + response.status);
      }
      heading.textContent = "[" + citation.n + "] " + data.title;
      // Rendered and escaped by the server, from this site.
      const holder = document.createElement("template");
      holder.innerHTML = await response.text();
      body.replaceChildren(holder.content);
    } catch (error) {
      body.textContent = "The passage could not be opened here. ";
      const link = document.createElement("a");
      link.href = passageUrl(citation.answerId, citation.n);
      link.textContent = "Open it on its own page";
      body.append(link);
    }
  }

  thread.addEventListener("click", function (event) {
    const citation = citationOf(event.target);
    if (!citation || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) {
      return;
    }
    event.preventDefault();
    openPanel(citation);
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && panel && !running) {
      closePanel();
    } else if (event.key === "Escape") {
      hidePreview();
    }
  });

  // ---- Ask within a selection, ask again, edit the question, the sidebar ------------------------

  function chosen(name) {
    return Array.from(form.querySelectorAll('input[name="' + name + '"]:checked')).map(
      function (input) {
        return Number(input.value);
      }
    );
  }

  const scopePicker = form.querySelector("[data-scope-picker]");
  if (scopePicker) {
    scopePicker.addEventListener("change", function () {
      const picked = Array.from(scopePicker.querySelectorAll("input:checked")).map(function (input) {
        const label = scopePicker.querySelector('label[for="' + input.id + '"]');
        return label ? label.textContent.trim() : input.value;
      });
      role(scopePicker, "scope-summary").textContent =
        picked.length === 0 ? "all the documents you may read" : picked.join(", ");
    });
  }

  function enhance(root) {
    root.querySelectorAll("[data-copy-target], [data-edit-question]").forEach(function (button) {
      button.hidden = false;
    });
  }

  thread.addEventListener("submit", function (event) {
    if (!event.target.matches("[data-ask-again]")) {
      return;
    }
    event.preventDefault();
    if (!running) {
      ask(event.target.querySelector("input[name=question]").value);
    }
  });

  thread.addEventListener("click", function (event) {
    const button = event.target.closest("[data-edit-question]");
    if (!button) {
      return;
    }
    textarea.value = button.dataset.editQuestion;
    updateCounter();
    textarea.focus();
    textarea.setSelectionRange(textarea.value.length, textarea.value.length);
    textarea.scrollIntoView({ block: "nearest" });
  });

  const sidebarToggle = page.querySelector("[data-sidebar-toggle]");
  if (sidebarToggle) {
    const narrow = window.matchMedia("(max-width: 56rem)");
    document.documentElement.classList.add("js-sidebar");
    sidebarToggle.hidden = false;
    const drawSidebarState = function () {
      const open = narrow.matches
        ? page.classList.contains("sidebar-open")
        : !page.classList.contains("sidebar-collapsed");
      sidebarToggle.setAttribute("aria-expanded", String(open));
    };
    sidebarToggle.addEventListener("click", function () {
      if (narrow.matches) {
        page.classList.toggle("sidebar-open");
      } else {
        page.classList.toggle("sidebar-collapsed");
      }
      drawSidebarState();
    });
    narrow.addEventListener("change", drawSidebarState);
    drawSidebarState();
  }

  enhance(thread);

  // ---- Feedback ------------------------------------------------------------------------------

  thread.addEventListener("submit", async function (event) {
    const feedbackForm = event.target;
    if (!feedbackForm.matches("[data-feedback-form]")) {
      return;
    }
    event.preventDefault();
    const submitter = event.submitter;
    const body = new FormData(feedbackForm);
    if (submitter && submitter.name) {
      body.set(submitter.name, submitter.value);
    }
    const status = role(feedbackForm, "feedback-status");
    const buttons = feedbackForm.querySelectorAll("button[name=rating]");
    buttons.forEach(function (button) {
      button.disabled = true;
    });
    try {
      const response = await fetch(feedbackForm.action, {
        method: "POST",
        body: body,
        headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
        credentials: "same-origin",
      });
      const type = response.headers.get("Content-Type") || "";
      if (!type.includes("application/json")) {
        throw new Error("Your session has ended. Reload the page and log in again.");
      }
      const saved = await response.json();
      if (!response.ok) {
        throw new Error(saved.detail || "The feedback was not saved.");
      }
      buttons.forEach(function (button) {
        button.setAttribute("aria-pressed", String(Number(button.value) === saved.rating));
      });
      status.textContent = saved.message;
    } catch (error) {
      status.textContent = error.message;
    } finally {
      buttons.forEach(function (button) {
        button.disabled = false;
      });
    }
  });

  updateCounter();
})();
