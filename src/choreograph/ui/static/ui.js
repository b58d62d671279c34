// choreo ui: live updates over server-sent events (no library; served from the package).
// The workflows and steps pages swap in the fragments the server renders (and escapes); a workflow's page
// reloads itself when the index holds more of its events than it shows.
(function () {
  "use strict";
  var live = document.body.getAttribute("data-live");
  if (!live || !window.EventSource) {
    return;
  }
  var source = new EventSource(live);
  if (live.indexOf("/live/workflows") === 0 || live.indexOf("/live/steps") === 0) {
    source.addEventListener("update", function (event) {
      var parts = JSON.parse(event.data);
      Object.keys(parts).forEach(function (id) {
        var element = document.getElementById(id);
        if (element) {
          element.innerHTML = parts[id];
        }
      });
      document.body.setAttribute("data-updated", String(Date.now()));
    });
    return;
  }
  var facts = document.getElementById("facts");
  source.addEventListener("update", function (event) {
    var row = JSON.parse(event.data);
    if (facts && row.events > Number(facts.getAttribute("data-events"))) {
      source.close();
      var url = new URL(window.location.href);
      url.searchParams.set("seen", String(row.events));
      window.location.replace(url.toString());
    }
  });
})();
