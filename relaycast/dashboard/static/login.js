/* Shows the login error line for /dashboard/login?error=1 (the server also unhides it on a failed POST). */
"use strict";
if (new URLSearchParams(location.search).get("error") === "1") {
  const e = document.getElementById("login-error");
  if (e) e.hidden = false;
}
