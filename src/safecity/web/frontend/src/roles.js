// What each role may do, mirroring the API's checks (the server refuses regardless of what the page shows).
const ALLOWED = {
  acknowledge: ["admin", "operator", "dispatcher", "responder"],
  assign: ["admin", "operator", "dispatcher"],
  resolve: ["admin", "operator", "dispatcher", "responder"],
  toIncident: ["admin", "operator", "dispatcher"],
  dispatch: ["admin", "operator", "dispatcher"],
  act: ["admin", "operator", "dispatcher"],
  // Road-network queries (isochrones, conditions, routing info): the API gives them to dispatch roles only.
  route: ["admin", "operator", "dispatcher"],
};

let role = "reader";

export function setRole(next) {
  role = next;
}

export function can(action) {
  return (ALLOWED[action] || []).includes(role);
}
