//! Turning `(method, path)` into an [`Action`] before anything else happens.
//!
//! Repository names contain `/`, so the path is parsed from its right-hand end, where the fixed
//! segments (`manifests/<ref>`, `blobs/<digest>`, `blobs/uploads/<id>`, `tags/list`, `referrers/<digest>`)
//! are. Every variable part is percent-decoded and validated into an `entrepot_oci` type here; later
//! layers (and, later, authorization) see only typed values. Knows nothing about how actions are served.

use entrepot_oci::{Digest, Reference, RepoName, UploadId};
use http::Method;
use percent_encoding::percent_decode_str;

use crate::error::ApiError;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `GET /v2/`
    ApiVersion,
    /// `GET /v2/_catalog`
    Catalog,
    /// `GET|HEAD /v2/<name>/blobs/<digest>`
    GetBlob { repo: RepoName, digest: Digest, head: bool },
    /// `DELETE /v2/<name>/blobs/<digest>`
    DeleteBlob { repo: RepoName, digest: Digest },
    /// `POST /v2/<name>/blobs/uploads/`
    StartUpload { repo: RepoName },
    /// `GET /v2/<name>/blobs/uploads/<id>`
    UploadStatus { repo: RepoName, id: UploadId },
    /// `PATCH /v2/<name>/blobs/uploads/<id>`
    PatchUpload { repo: RepoName, id: UploadId },
    /// `PUT /v2/<name>/blobs/uploads/<id>?digest=`
    FinishUpload { repo: RepoName, id: UploadId },
    /// `DELETE /v2/<name>/blobs/uploads/<id>`
    CancelUpload { repo: RepoName, id: UploadId },
    /// `GET|HEAD /v2/<name>/manifests/<reference>`
    GetManifest { repo: RepoName, reference: Reference, head: bool },
    /// `PUT /v2/<name>/manifests/<reference>`
    PutManifest { repo: RepoName, reference: Reference },
    /// `DELETE /v2/<name>/manifests/<reference>`
    DeleteManifest { repo: RepoName, reference: Reference },
    /// `GET /v2/<name>/tags/list`
    ListTags { repo: RepoName },
    /// `GET /v2/<name>/referrers/<digest>`
    Referrers { repo: RepoName, digest: Digest },
    /// `GET /v2/<name>/_entrepot/vulnerabilities/<reference>` (the scanning extension, see `scan_api`)
    ScanReport { repo: RepoName, reference: Reference },
}

/// Parses a request line into an action; `NotFound` for paths outside the API, `MethodNotAllowed`
/// for a known path with the wrong method, and the protocol error for an invalid name or digest.
pub fn parse(method: &Method, path: &str) -> Result<Action, ApiError> {
    let Some(rest) = path.strip_prefix("/v2") else { return Err(ApiError::not_found()) };
    if rest.is_empty() || rest == "/" {
        return match *method {
            Method::GET | Method::HEAD => Ok(Action::ApiVersion),
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    let Some(rest) = rest.strip_prefix('/') else { return Err(ApiError::not_found()) };
    if rest == "_catalog" {
        return match *method {
            Method::GET => Ok(Action::Catalog),
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name_of = |count: usize| -> Result<RepoName, ApiError> {
        if count == 0 {
            return Err(ApiError::not_found());
        }
        // Names are never percent-decoded: the grammar has no character that needs encoding, so an
        // encoded slash or dot is simply an invalid name.
        RepoName::parse(&segs[..count].join("/")).map_err(ApiError::from_name)
    };
    let get_or_head = |m: &Method| -> Result<bool, ApiError> {
        match *m {
            Method::GET => Ok(false),
            Method::HEAD => Ok(true),
            _ => Err(ApiError::method_not_allowed()),
        }
    };

    // .../tags/list
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        let repo = name_of(n - 2)?;
        return match *method {
            Method::GET => Ok(Action::ListTags { repo }),
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    // .../_entrepot/vulnerabilities/<reference> (an extension: `_` cannot start a name component)
    if n >= 4 && segs[n - 3] == "_entrepot" && segs[n - 2] == "vulnerabilities" {
        let repo = name_of(n - 3)?;
        let reference = Reference::parse(&decode(segs[n - 1])?).map_err(ApiError::from_name)?;
        return match *method {
            Method::GET => Ok(Action::ScanReport { repo, reference }),
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    // .../manifests/<reference>
    if n >= 3 && segs[n - 2] == "manifests" {
        let repo = name_of(n - 2)?;
        let reference = Reference::parse(&decode(segs[n - 1])?).map_err(ApiError::from_name)?;
        return match *method {
            Method::GET | Method::HEAD => Ok(Action::GetManifest { repo, reference, head: *method == Method::HEAD }),
            Method::PUT => Ok(Action::PutManifest { repo, reference }),
            Method::DELETE => Ok(Action::DeleteManifest { repo, reference }),
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    // .../referrers/<digest>
    if n >= 3 && segs[n - 2] == "referrers" {
        let repo = name_of(n - 2)?;
        let digest = parse_digest(segs[n - 1])?;
        return match *method {
            Method::GET => Ok(Action::Referrers { repo, digest }),
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    // .../blobs/uploads/ and .../blobs/uploads (start)
    if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads"
        || n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" && segs[n - 1].is_empty()
    {
        let count = if segs[n - 1].is_empty() { n - 3 } else { n - 2 };
        let repo = name_of(count)?;
        return match *method {
            Method::POST => Ok(Action::StartUpload { repo }),
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    // .../blobs/uploads/<id>
    if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        let repo = name_of(n - 3)?;
        let id = UploadId::parse(segs[n - 1]).ok_or_else(ApiError::upload_unknown)?;
        return match *method {
            Method::GET | Method::HEAD => Ok(Action::UploadStatus { repo, id }),
            Method::PATCH => Ok(Action::PatchUpload { repo, id }),
            Method::PUT => Ok(Action::FinishUpload { repo, id }),
            Method::DELETE => Ok(Action::CancelUpload { repo, id }),
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    // .../blobs/<digest>
    if n >= 3 && segs[n - 2] == "blobs" {
        let repo = name_of(n - 2)?;
        let digest = parse_digest(segs[n - 1])?;
        return match *method {
            Method::DELETE => Ok(Action::DeleteBlob { repo, digest }),
            ref m => Ok(Action::GetBlob { repo, digest, head: get_or_head(m)? }),
        };
    }
    Err(ApiError::not_found())
}

fn decode(s: &str) -> Result<String, ApiError> {
    percent_decode_str(s).decode_utf8().map(|c| c.into_owned()).map_err(|_| ApiError::not_found())
}

fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    Digest::parse(&decode(s)?).map_err(ApiError::from_digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(m: Method, p: &str) -> Action {
        parse(&m, p).unwrap_or_else(|e| panic!("{p}: {e:?}"))
    }

    #[test]
    fn routes() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(ok(Method::GET, "/v2/"), Action::ApiVersion);
        assert_eq!(ok(Method::GET, "/v2"), Action::ApiVersion);
        assert_eq!(ok(Method::GET, "/v2/_catalog"), Action::Catalog);
        assert!(matches!(ok(Method::GET, "/v2/a/b/c/manifests/latest"),
            Action::GetManifest { repo, head: false, .. } if repo.as_str() == "a/b/c"));
        assert!(matches!(ok(Method::HEAD, &format!("/v2/x/blobs/{d}")), Action::GetBlob { head: true, .. }));
        assert!(matches!(ok(Method::GET, &format!("/v2/x/blobs/{}", d.replace(':', "%3A"))), Action::GetBlob { .. }));
        assert!(
            matches!(ok(Method::POST, "/v2/team/app/blobs/uploads/"), Action::StartUpload { repo } if repo.as_str() == "team/app")
        );
        assert!(matches!(ok(Method::POST, "/v2/team/app/blobs/uploads"), Action::StartUpload { .. }));
        assert!(matches!(ok(Method::PATCH, "/v2/team/app/blobs/uploads/abc-123"), Action::PatchUpload { .. }));
        assert!(matches!(ok(Method::GET, "/v2/a/tags/list"), Action::ListTags { .. }));
        assert!(matches!(ok(Method::GET, &format!("/v2/a/referrers/{d}")), Action::Referrers { .. }));
        assert!(matches!(ok(Method::GET, "/v2/team/app/_entrepot/vulnerabilities/v1"),
            Action::ScanReport { repo, .. } if repo.as_str() == "team/app"));
        assert!(matches!(ok(Method::GET, &format!("/v2/a/_entrepot/vulnerabilities/{d}")), Action::ScanReport { .. }));
        // A repository may be named like a route segment.
        assert!(matches!(ok(Method::GET, "/v2/blobs/manifests/manifests/v1"),
            Action::GetManifest { repo, .. } if repo.as_str() == "blobs/manifests"));
        assert!(
            matches!(ok(Method::GET, "/v2/tags/list/tags/list"), Action::ListTags { repo } if repo.as_str() == "tags/list")
        );
    }

    #[test]
    fn rejects() {
        assert!(parse(&Method::GET, "/v3/").is_err());
        assert!(parse(&Method::POST, "/v2/").is_err());
        assert!(parse(&Method::GET, "/v2/a/../b/manifests/x").is_err());
        assert!(parse(&Method::GET, "/v2/a%2F..%2Fb/manifests/x").is_err());
        assert!(parse(&Method::GET, "/v2/A/manifests/x").is_err());
        assert!(parse(&Method::GET, "/v2/a%2Fb/manifests/x").is_err());
        assert!(parse(&Method::GET, "/v2/a/blobs/sha256:zz").is_err());
        assert!(parse(&Method::GET, "/v2/a/manifests/-bad").is_err());
        assert!(parse(&Method::GET, "/v2/a/nothing").is_err());
        assert!(parse(&Method::PATCH, "/v2/a/blobs/uploads/../../x").is_err());
        assert!(parse(&Method::GET, "/v2/_entrepot/vulnerabilities/v1").is_err());
        assert!(parse(&Method::GET, "/v2/A/_entrepot/vulnerabilities/v1").is_err());
        assert!(parse(&Method::GET, "/v2/a/_entrepot/vulnerabilities/-bad").is_err());
        assert!(parse(&Method::DELETE, "/v2/a/_entrepot/vulnerabilities/v1").is_err());
    }
}
