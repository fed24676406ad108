//! The path of a proxied call, below the tenant's API base: checked so that the target
//! never leaves `api_base_url` (no `.` or `..` segment, however encoded; no encoded `/`;
//! no backslash, raw or encoded), and passed on exactly as the caller encoded it.

use percent_encoding::percent_decode_str;
use url::Url;

/// A proxied path as received (percent-encoded), without its leading `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPath(String);

impl ProxyPath {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.contains('\\') {
            return Err("must not contain a backslash".to_owned());
        }
        let segments: Vec<&str> = raw.split('/').collect();
        for (at, segment) in segments.iter().enumerate() {
            let decoded: Vec<u8> = percent_decode_str(segment).collect();
            if decoded == b"." || decoded == b".." {
                return Err("must not contain `.` or `..` segments".to_owned());
            }
            if decoded.contains(&b'/') {
                return Err("must not contain an encoded `/` (%2F)".to_owned());
            }
            if decoded.contains(&b'\\') {
                return Err("must not contain a backslash (%5C)".to_owned());
            }
            if segment.is_empty() && at + 1 < segments.len() {
                return Err("must not contain empty segments (`//`)".to_owned());
            }
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `{base}/{path}?{query}`: the query as received; `None` if the result would not
    /// stay below `base` (it always does for a parsed path: checked once more here).
    pub fn target(&self, base: &Url, query: Option<&str>) -> Option<Url> {
        let mut prefix = base.path().to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let mut url = base.clone();
        url.set_path(&format!("{prefix}{}", self.0));
        url.set_query(query);
        url.set_fragment(None);
        let stays = url.origin() == base.origin()
            && url.path().starts_with(&prefix)
            && url.username().is_empty()
            && url.password().is_none();
        stays.then_some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_leave_the_base_are_refused() {
        for (raw, why) in [
            ("..", "dot-dot"),
            ("a/../b", "inner dot-dot"),
            ("a/./b", "dot"),
            ("%2e%2e/x", "encoded dot-dot"),
            ("%2E./x", "mixed dot-dot"),
            (".%2E", "mixed dot-dot, upper case"),
            ("a%2Fb", "encoded slash"),
            ("a%2fb", "encoded slash, lower case"),
            ("a\\b", "backslash"),
            ("a%5Cb", "encoded backslash"),
            ("a%5cb", "encoded backslash, lower case"),
            ("/evil.example/x", "leading empty segment"),
            ("a//b", "empty segment"),
        ] {
            assert!(ProxyPath::parse(raw).is_err(), "{why}: {raw}");
        }
    }

    #[test]
    fn ordinary_paths_pass_unchanged_with_their_query() {
        let base = Url::parse("https://api.example.com").unwrap();
        let cases = [
            (
                "api/enterprise/v1/enterprise-customer/",
                Some("page=2"),
                "https://api.example.com/api/enterprise/v1/enterprise-customer/?page=2",
            ),
            (
                "api/courses/v1/courses/course-v1:edX+DemoX+Demo_Course",
                Some("a=1+2&b=%2B&c=course-v1:edX+DemoX+Demo_Course"),
                "https://api.example.com/api/courses/v1/courses/course-v1:edX+DemoX+Demo_Course?a=1+2&b=%2B&c=course-v1:edX+DemoX+Demo_Course",
            ),
            ("a%20b/..x", None, "https://api.example.com/a%20b/..x"),
            ("", None, "https://api.example.com/"),
        ];
        for (raw, query, expected) in cases {
            let path = ProxyPath::parse(raw).unwrap();
            assert_eq!(path.target(&base, query).unwrap().as_str(), expected);
        }
        let nested = Url::parse("https://lms.example.com/prefix").unwrap();
        assert_eq!(
            ProxyPath::parse("api/x")
                .unwrap()
                .target(&nested, None)
                .unwrap()
                .as_str(),
            "https://lms.example.com/prefix/api/x"
        );
    }
}
