// The tree page (forests/tree_detail.html): expand all / collapse all, and a permalink (#node-ID) opens the forks
// above its node so that the node is shown. A file, not an inline script: the Content-Security-Policy allows only these.
(function () {
  "use strict";

  function show(id) {
    var node = id && document.getElementById(id);
    if (!node) return;
    for (var el = node.parentElement; el; el = el.parentElement) {
      if (el.tagName === "DETAILS") el.open = true;
    }
    node.scrollIntoView({ block: "center" });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var buttons = document.querySelector(".tree-buttons");
    if (buttons) buttons.hidden = false;
    document.querySelectorAll("[data-tree-toggle]").forEach(function (button) {
      button.addEventListener("click", function () {
        var open = button.getAttribute("data-tree-toggle") === "expand";
        document.querySelectorAll(".tree details.kids").forEach(function (details) {
          details.open = open;
        });
      });
    });
    show(decodeURIComponent(location.hash.slice(1)));
    window.addEventListener("hashchange", function () {
      show(decodeURIComponent(location.hash.slice(1)));
    });
  });
})();
