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
    stopButton.hidden = !busy;
    textarea.readOnly = busy;
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
      const label = form.querySelector("label[for=question]");
      if (label) {
        label.textContent = "Follow-up question";
      }
      addToSidebar(data.conversation_url, data.title);
    }
  }

  function addToSidebar(url, title) {
    const list = page.querySelector("[data-conversation-list]");
    if (!list || list.querySelector('a[href="' + url + '"]')) {
      return;
    }
    const empty = role(list, "no-conversations");
    if (empty) {
      empty.remove();
    }
    list.querySelectorAll("[aria-current]").forEach(function (link) {
      link.removeAttribute("aria-current");
      link.closest("li").classList.remove("is-current");
    });
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
      answer.textContent = data.text;
    } else if (kind === "answer") {
      answer.textContent += data.text;
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
        body: JSON.stringify({ question: question, conversation_id: conversationInput.value || null }),
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
      // A question that got its answer leaves the box; any other outcome keeps it for a retry.
      if (outcome === "answered" || outcome === "abstained") {
        textarea.value = "";
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
