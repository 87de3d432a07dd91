// Every page: the navigation folds behind a Menu button on narrow screens.
// Without this script the navigation wraps onto more lines instead.
(function () {
  "use strict";

  const header = document.querySelector(".site-header");
  const toggle = header && header.querySelector(".nav-toggle");
  if (!toggle) {
    return;
  }
  header.classList.add("js-nav");
  toggle.hidden = false;
  toggle.addEventListener("click", function () {
    const open = !header.classList.contains("nav-open");
    header.classList.toggle("nav-open", open);
    toggle.setAttribute("aria-expanded", String(open));
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && header.classList.contains("nav-open")) {
      header.classList.remove("nav-open");
      toggle.setAttribute("aria-expanded", "false");
      toggle.focus();
    }
  });
})();
