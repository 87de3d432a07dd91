// Copy buttons: a button with data-copy-target copies the text of the element with that id.
// Without this script the buttons stay hidden and the text can be selected and copied by hand.
(function () {
  "use strict";

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    // Plain HTTP on another host: the older way still works there.
    const scratch = document.createElement("textarea");
    scratch.value = text;
    scratch.setAttribute("readonly", "");
    scratch.className = "visually-hidden";
    document.body.append(scratch);
    scratch.select();
    const copied = document.execCommand("copy");
    scratch.remove();
    if (!copied) {
      throw new Error("copy refused");
    }
  }

  function statusNear(button) {
    const holder = button.closest("section, article, form") || document;
    return holder.querySelector('[data-role="copy-status"]');
  }

  document.querySelectorAll("[data-copy-target]").forEach(function (button) {
    button.hidden = false;
  });

  document.addEventListener("click", async function (event) {
    const button = event.target.closest("[data-copy-target]");
    if (!button) {
      return;
    }
    const source = document.getElementById(button.dataset.copyTarget);
    if (!source) {
      return;
    }
    const status = statusNear(button);
    const text = "value" in source ? source.value : source.innerText;
    try {
      await copyText(text.trim());
      if (status) {
        status.textContent = "Copied.";
      }
    } catch (error) {
      if (source.select) {
        source.select();
      }
      if (status) {
        status.textContent = "Copying was refused: the text is selected, press Ctrl+C.";
      }
    }
  });
})();
