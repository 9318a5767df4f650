// The app-server side of the differential tests (tests/tomcat/): answers every request with what
// Tomcat and Jackson resolved, as JSON. Compiled by tests/tomcat/tomcat.py with javac against
// Tomcat's servlet-api.jar and Debian's Jackson jars; no binary is committed.
//
// Answer: {"probe": true, "method", "request_uri", "context_path", "servlet_path", "path_info",
//          "params": {name: [values…]} (getParameterMap: names in order of first appearance,
//          every value as getParameterValues gives it),
//          "identity": [values of x-forwarded-user], "authorization": bool, "cookie": bool,
//          "json": {node: {"missing": bool, "type": JsonNodeType, "text": asText(),
//                          "exact": the number's exact value (BigDecimal, plain)}}
//                  or {"error": message} when Jackson refuses the body}
// The answer is also in the x-probe-view header (base64), for HEAD requests.
// JSON nodes are read only when the request names them in x-probe-json (comma-separated node
// paths, dotted for nested objects), from the body bytes as Jackson's readTree reads a stream
// (encoding auto-detected, duplicate names: last one wins, trailing tokens ignored: its
// defaults, as an app's ObjectMapper has them).
package tokengate.probe;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.util.Base64;
import java.util.Enumeration;
import java.util.Map;

public class ProbeServlet extends HttpServlet {
    private static final ObjectMapper MAPPER = new ObjectMapper();
    private static final ObjectMapper EXACT = new ObjectMapper()
            .enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS)
            .enable(DeserializationFeature.USE_BIG_INTEGER_FOR_INTS);

    @Override
    protected void service(HttpServletRequest req, HttpServletResponse resp) throws IOException {
        ObjectNode out = MAPPER.createObjectNode();
        out.put("probe", true);
        out.put("method", req.getMethod());
        out.put("request_uri", req.getRequestURI());
        out.put("context_path", req.getContextPath());
        out.put("servlet_path", req.getServletPath());
        out.put("path_info", req.getPathInfo());
        ObjectNode params = out.putObject("params");
        for (Map.Entry<String, String[]> e : req.getParameterMap().entrySet()) {
            ArrayNode values = params.putArray(e.getKey());
            for (String v : e.getValue()) {
                values.add(v);
            }
        }
        ArrayNode identity = out.putArray("identity");
        Enumeration<String> ids = req.getHeaders("x-forwarded-user");
        while (ids.hasMoreElements()) {
            identity.add(ids.nextElement());
        }
        out.put("authorization", req.getHeader("authorization") != null);
        out.put("cookie", req.getHeader("cookie") != null);
        String probe = req.getHeader("x-probe-json");
        if (probe != null) {
            byte[] body = req.getInputStream().readAllBytes();
            out.put("body_bytes", body.length);
            ObjectNode json = out.putObject("json");
            try {
                JsonNode tree = MAPPER.readTree(body);
                JsonNode exact = EXACT.readTree(body);
                for (String path : probe.split(",")) {
                    ObjectNode r = json.putObject(path);
                    JsonNode n = tree;
                    JsonNode x = exact;
                    for (String part : path.split("\\.", -1)) {
                        n = (n == null || !n.isObject()) ? null : n.get(part);
                        x = (x == null || !x.isObject()) ? null : x.get(part);
                    }
                    if (n == null || n.isMissingNode()) {
                        r.put("missing", true);
                        continue;
                    }
                    r.put("missing", false);
                    r.put("type", n.getNodeType().name());
                    r.put("text", n.asText());
                    if (x != null && x.isNumber()) {
                        try {
                            r.put("exact", x.decimalValue().toPlainString());
                        } catch (NumberFormatException e) {
                            // 1e400 reads as an infinite double, which has no exact value
                            r.put("exact_error", String.valueOf(e.getMessage()));
                        }
                    }
                }
            } catch (IOException | RuntimeException e) {
                json.removeAll();
                json.put("error", String.valueOf(e.getMessage()));
            }
        }
        byte[] answer = MAPPER.writeValueAsBytes(out);
        resp.setStatus(200);
        resp.setHeader("x-probe", "1");
        // A HEAD answer has no body: the same answer, base64, in a header
        resp.setHeader("x-probe-view", Base64.getEncoder().encodeToString(answer));
        resp.setContentType("application/json");
        resp.setContentLength(answer.length);
        resp.getOutputStream().write(answer);
    }
}
