//! The web explorer: a page for browsers at `/` (only for requests whose `Accept` names
//! `text/html`; every other `GET /` keeps its 404 problem+json) and its stylesheet and ES modules
//! under `/explorer/`, all embedded in the binary, so a device on a LAN without Internet serves
//! them as it serves TDs.
//!
//! It serves bytes and headers only (a strict Content-Security-Policy: no inline script or
//! style). It must not know the URL contract or any thing: the page reads `GET /things` and then
//! follows the forms of each TD, as it would against any other WoT server.

use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, guard, web};

use super::problem::HttpError;

/// Where the page's assets live on the port.
const ASSET_PREFIX: &str = "/explorer/";

/// The page's policy: scripts and styles from this origin only, none inline; connections to any
/// HTTP(S) or WebSocket origin, because the page also explores a TD pasted from another server.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self' http: https: ws: wss:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const PAGE: &[u8] = include_bytes!("explorer/index.html");

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("explorer/style.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("explorer/icon.svg"),
    },
    Asset {
        name: "app.js",
        content_type: JS,
        bytes: include_bytes!("explorer/app.js"),
    },
    Asset {
        name: "net.js",
        content_type: JS,
        bytes: include_bytes!("explorer/net.js"),
    },
    Asset {
        name: "schema.js",
        content_type: JS,
        bytes: include_bytes!("explorer/schema.js"),
    },
    Asset {
        name: "thing.js",
        content_type: JS,
        bytes: include_bytes!("explorer/thing.js"),
    },
    Asset {
        name: "dom.js",
        content_type: JS,
        bytes: include_bytes!("explorer/dom.js"),
    },
    Asset {
        name: "forms.js",
        content_type: JS,
        bytes: include_bytes!("explorer/forms.js"),
    },
];

fn asset(path: &str) -> Option<&'static Asset> {
    let name = path.strip_prefix(ASSET_PREFIX)?;
    ASSETS.iter().find(|a| a.name == name)
}

/// Whether an `Accept` header asks for HTML: a `text/html` (or `text/*`) range whose quality is
/// not zero. `*/*` alone does not: curl and most API clients send it and expect the API.
pub(crate) fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (media == "text/html" || media == "text/*") && !refused
        })
}

/// Whether a request is for the page or one of its assets, which carry no secret and are
/// served without credentials under `--auth`, so that the page can load and ask for the token.
/// Everything the page then reads goes through the API, which stays guarded.
pub(crate) fn is_public(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    let read = method == Method::GET || method == Method::HEAD;
    read && ((path == "/" && accepts_html(headers)) || asset(path).is_some())
}

fn hardened(
    mut builder: actix_web::HttpResponseBuilder,
    content_type: &'static str,
) -> actix_web::HttpResponseBuilder {
    builder
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        // A new binary may bring a new page: revalidate rather than run stale modules.
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    builder
}

async fn page() -> HttpResponse {
    hardened(HttpResponse::Ok(), "text/html; charset=utf-8")
        .insert_header((header::VARY, "Accept"))
        .body(PAGE)
}

async fn serve_asset(req: HttpRequest) -> Result<HttpResponse, HttpError> {
    let Some(a) = asset(req.path()) else {
        return Err(HttpError::NotFound(req.path().to_owned()));
    };
    match *req.method() {
        Method::GET | Method::HEAD => Ok(hardened(HttpResponse::Ok(), a.content_type).body(a.bytes)),
        _ => Err(HttpError::MethodNotAllowed("GET, HEAD")),
    }
}

/// `/` for anything but HTML: the 404 problem it always was, saying that the answer depends on
/// `Accept`, so that no cache hands it to a browser (or the page to an API client).
async fn not_for_html(req: HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    let mut response = HttpError::NotFound(req.path().to_owned()).error_response();
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

fn html_guard() -> impl guard::Guard {
    guard::fn_guard(|ctx| accepts_html(ctx.head().headers()))
}

/// Registers `/` (for HTML only; anything else there is the 404 it always was) and the assets.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::get().guard(html_guard()).to(page))
            .route(web::head().guard(html_guard()).to(page))
            .default_service(web::to(not_for_html)),
    )
    // Under a static prefix, so that other requests pay a string comparison; the asset is looked
    // up by its path, without a pattern (the router would compile a regex per worker).
    .service(web::scope("/explorer").default_service(web::to(serve_asset)));
}

/// The total size of the page and its assets, in bytes (the README states it).
#[cfg(test)]
fn weight() -> usize {
    PAGE.len() + ASSETS.iter().map(|a| a.bytes.len()).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn html_is_asked_for_by_browsers_only() {
        let chromium = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";
        assert!(accepts_html(&accept(chromium)));
        assert!(accepts_html(&accept("TEXT/HTML; charset=utf-8")));
        assert!(!accepts_html(&accept("*/*")));
        assert!(!accepts_html(&accept("application/json")));
        assert!(!accepts_html(&accept("text/html;q=0, application/json")));
        assert!(!accepts_html(&HeaderMap::new()));
    }

    #[test]
    fn only_the_page_and_known_assets_are_public() {
        let html = accept("text/html");
        assert!(is_public(&Method::GET, "/", &html));
        assert!(!is_public(&Method::GET, "/", &accept("application/json")));
        assert!(!is_public(&Method::POST, "/", &html));
        assert!(is_public(&Method::GET, "/explorer/app.js", &HeaderMap::new()));
        assert!(!is_public(&Method::GET, "/explorer/secret.js", &HeaderMap::new()));
        assert!(!is_public(&Method::GET, "/things", &html));
    }

    #[test]
    fn the_page_stays_small() {
        // The README promises a small page; a framework slipped in would show here.
        assert!(weight() < 64 * 1024, "{} bytes", weight());
    }

    #[test]
    fn no_inline_script_or_style_in_the_page() {
        let page = std::str::from_utf8(PAGE).unwrap();
        assert!(!page.contains("<script>") && !page.contains("style="), "{page}");
        assert!(!page.contains("<style"), "{page}");
    }
}
