// Package validate checks the Kubernetes manifests of deploy/kubernetes
// offline: every document decodes strictly (unknown or duplicate fields
// are errors) into the Kubernetes API types of its kind, and the pieces
// fit together (selectors, Service ports, Ingress backends, the
// NetworkPolicy, the ConfigMap, probes and grace periods). It is its own Go module so that the
// Kubernetes API packages stay out of roomcast's dependencies; .ci/run runs
// it with `go test` in this directory.
package validate

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const dir = ".."

// kustomization is the part of kustomization.yaml these manifests use;
// decoding it strictly catches a misspelt key.
type kustomization struct {
	APIVersion         string   `json:"apiVersion"`
	Kind               string   `json:"kind"`
	Namespace          string   `json:"namespace"`
	Resources          []string `json:"resources"`
	ConfigMapGenerator []struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	} `json:"configMapGenerator"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

// manifests holds every decoded object by kind and name.
type manifests struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	pdbs        map[string]*policyv1.PodDisruptionBudget
	hpas        map[string]*autoscalingv2.HorizontalPodAutoscaler
	ingresses   map[string]*networkingv1.Ingress
	namespaces  map[string]*corev1.Namespace
	configMaps  map[string]*corev1.ConfigMap
	policies    map[string]*networkingv1.NetworkPolicy
}

func readKustomization(t *testing.T) kustomization {
	t.Helper()
	var k kustomization
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeStrict(b, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml: apiVersion %q kind %q", k.APIVersion, k.Kind)
	}
	return k
}

// load decodes every resource of the kustomization, and builds the
// generated ConfigMaps from their files.
func load(t *testing.T) manifests {
	t.Helper()
	k := readKustomization(t)
	m := manifests{
		deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{},
		ingresses: map[string]*networkingv1.Ingress{}, namespaces: map[string]*corev1.Namespace{},
		configMaps: map[string]*corev1.ConfigMap{}, policies: map[string]*networkingv1.NetworkPolicy{},
	}
	for _, file := range k.Resources {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitDocuments(b) {
			where := fmt.Sprintf("%s document %d", file, i+1)
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			var obj interface{ GetName() string }
			switch tm.APIVersion + " " + tm.Kind {
			case "apps/v1 Deployment":
				o := &appsv1.Deployment{}
				obj, m.deployments = o, put(m.deployments, o, doc, where, t)
			case "v1 Service":
				o := &corev1.Service{}
				obj, m.services = o, put(m.services, o, doc, where, t)
			case "policy/v1 PodDisruptionBudget":
				o := &policyv1.PodDisruptionBudget{}
				obj, m.pdbs = o, put(m.pdbs, o, doc, where, t)
			case "autoscaling/v2 HorizontalPodAutoscaler":
				o := &autoscalingv2.HorizontalPodAutoscaler{}
				obj, m.hpas = o, put(m.hpas, o, doc, where, t)
			case "networking.k8s.io/v1 Ingress":
				o := &networkingv1.Ingress{}
				obj, m.ingresses = o, put(m.ingresses, o, doc, where, t)
			case "networking.k8s.io/v1 NetworkPolicy":
				o := &networkingv1.NetworkPolicy{}
				obj, m.policies = o, put(m.policies, o, doc, where, t)
			case "v1 Namespace":
				o := &corev1.Namespace{}
				obj, m.namespaces = o, put(m.namespaces, o, doc, where, t)
			default:
				t.Fatalf("%s: unexpected apiVersion %q kind %q", where, tm.APIVersion, tm.Kind)
			}
			if !dnsLabel.MatchString(obj.GetName()) {
				t.Errorf("%s: name %q is not a DNS label", where, obj.GetName())
			}
		}
	}
	for _, g := range k.ConfigMapGenerator {
		cm := &corev1.ConfigMap{Data: map[string]string{}}
		cm.Name = g.Name
		for _, f := range g.Files {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatalf("configMapGenerator %s: %v", g.Name, err)
			}
			var any map[string]any
			if err := yaml.Unmarshal(b, &any); err != nil {
				t.Fatalf("configMapGenerator %s: %s: %v", g.Name, f, err)
			}
			cm.Data[filepath.Base(f)] = string(b)
		}
		m.configMaps[g.Name] = cm
	}
	return m
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func put[T interface{ GetName() string }](into map[string]T, o T, doc []byte, where string, t *testing.T) map[string]T {
	t.Helper()
	if err := decodeStrict(doc, o); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if _, dup := into[o.GetName()]; dup {
		t.Fatalf("%s: %s defined twice", where, o.GetName())
	}
	into[o.GetName()] = o
	return into
}

// decodeStrict decodes one YAML document the way the API server does:
// field names are case-sensitive, and unknown or duplicate fields are
// errors (the API server would drop or refuse them).
func decodeStrict(doc []byte, into any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, into, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// splitDocuments splits a multi-document YAML file at its "---" lines.
func splitDocuments(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestKustomizationListsEveryManifest: a manifest left out of
// kustomization.yaml would silently not be deployed.
func TestKustomizationListsEveryManifest(t *testing.T) {
	k := readKustomization(t)
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	notResources := []string{"kustomization.yaml", "nats-values.yaml"}
	for _, g := range k.ConfigMapGenerator {
		notResources = append(notResources, g.Files...)
	}
	for _, f := range files {
		name := filepath.Base(f)
		if !slices.Contains(k.Resources, name) && !slices.Contains(notResources, name) {
			t.Errorf("%s is not in kustomization.yaml's resources", name)
		}
	}
	if k.Namespace == "" {
		t.Error("kustomization.yaml sets no namespace")
	}
	if len(k.Images) == 0 {
		t.Error("kustomization.yaml does not say where the image comes from")
	}
}

// TestManifestsFitTogether checks what a strict decode cannot: references
// between objects and the settings the README promises.
func TestManifestsFitTogether(t *testing.T) {
	m := load(t)
	k := readKustomization(t)
	if _, ok := m.namespaces[k.Namespace]; !ok {
		t.Errorf("namespace %q is not created by the manifests", k.Namespace)
	}
	imageNames := map[string]bool{}
	for _, i := range k.Images {
		imageNames[i.Name] = true
	}
	for name, d := range m.deployments {
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("deployment %s: selector %v does not match its pod labels (%v)", name, d.Spec.Selector, err)
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.ConfigMap != nil {
				if _, ok := m.configMaps[v.ConfigMap.Name]; !ok {
					t.Errorf("deployment %s: volume %s uses ConfigMap %s, which nothing creates", name, v.Name, v.ConfigMap.Name)
				}
			}
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if !imageNames[c.Image] {
				t.Errorf("deployment %s: image %q is not one the kustomization sets (%v)", name, c.Image, imageNames)
			}
			if c.SecurityContext == nil || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
				t.Errorf("deployment %s: container %s may escalate privileges", name, c.Name)
			}
		}
		if sc := d.Spec.Template.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("deployment %s: does not require a non-root user", name)
		}
	}

	gw := m.deployments["roomcast-gateway"]
	if gw == nil {
		t.Fatal("no Deployment roomcast-gateway")
	}
	c := gw.Spec.Template.Spec.Containers[0]
	probe := func(what string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path {
			t.Errorf("gateway %s probe: want GET %s, got %+v", what, path, p)
		}
	}
	probe("readiness", c.ReadinessProbe, "/readyz")
	probe("liveness", c.LivenessProbe, "/healthz")
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Fatal("gateway: no preStop sleep (the endpoints must drop the pod before it drains)")
	}
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	shutdown := shutdownTimeout(t, m.configMaps["roomcast-config"].Data["config.yaml"])
	grace := time.Duration(*gw.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	if grace <= preStop+shutdown {
		t.Errorf("gateway: terminationGracePeriodSeconds %v must exceed preStop %v + shutdown_timeout %v", grace, preStop, shutdown)
	}

	gwLabels := labels.Set(gw.Spec.Template.Labels)
	svc := m.services["roomcast-gateway"]
	if svc == nil {
		t.Fatal("no Service roomcast-gateway")
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(gwLabels) {
		t.Errorf("service selector %v does not select the gateway pods", svc.Spec.Selector)
	}
	for _, p := range svc.Spec.Ports {
		if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == p.TargetPort.String() }) {
			t.Errorf("service port %s targets %s, which the gateway container does not name", p.Name, p.TargetPort.String())
		}
	}

	pdbCount := 0
	for name, pdb := range m.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		if sel.Matches(gwLabels) {
			pdbCount++
		} else {
			t.Errorf("pdb %s selects no gateway pods", name)
		}
	}
	if pdbCount != 1 {
		t.Errorf("%d PodDisruptionBudgets cover the gateways, want 1", pdbCount)
	}

	hpa := m.hpas["roomcast-gateway"]
	if hpa == nil || hpa.Spec.ScaleTargetRef.Kind != "Deployment" || m.deployments[hpa.Spec.ScaleTargetRef.Name] == nil {
		t.Fatalf("no HorizontalPodAutoscaler for an existing Deployment: %+v", hpa)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 {
		t.Error("hpa: minReplicas below 2 leaves no replica to drain to")
	}

	var socketio, root bool
	for name, ing := range m.ingresses {
		affinity := ing.Annotations["nginx.ingress.kubernetes.io/affinity"] != ""
		if ing.Annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "" {
			t.Errorf("ingress %s: no proxy-read-timeout (idle WebSockets would be cut after 60s)", name)
		}
		for _, r := range ing.Spec.Rules {
			for _, p := range r.HTTP.Paths {
				b := p.Backend.Service
				if b == nil || m.services[b.Name] == nil || !slices.ContainsFunc(m.services[b.Name].Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == b.Port.Name }) {
					t.Errorf("ingress %s path %s: backend %+v is not a Service port of these manifests", name, p.Path, b)
				}
				switch p.Path {
				case "/socket.io/":
					socketio = true
					if !affinity {
						t.Errorf("ingress %s: /socket.io/ without cookie affinity", name)
					}
				case "/":
					root = true
					if affinity {
						t.Errorf("ingress %s: affinity on / (only /socket.io/ needs it)", name)
					}
				}
			}
		}
	}
	if !socketio || !root {
		t.Errorf("ingresses route / %v and /socket.io/ %v; want both", root, socketio)
	}

	checkNetworkPolicy(t, m, gw)

	rooms := map[string]bool{}
	for _, d := range m.deployments {
		c := d.Spec.Template.Spec.Containers[0]
		if len(c.Command) == 0 || c.Command[0] != "/usr/local/bin/producer" {
			continue
		}
		if *d.Spec.Replicas != 1 {
			t.Errorf("producer %s: %d replicas would publish every update more than once", d.Name, *d.Spec.Replicas)
		}
		if i := slices.Index(c.Args, "--rooms"); i >= 0 && i+1 < len(c.Args) {
			rooms[c.Args[i+1]] = true
		}
	}
	if !rooms["sales"] || !rooms["visitors"] {
		t.Errorf("producer deployments for rooms %v; want sales and visitors", rooms)
	}
}

// checkNetworkPolicy: the gateways believe X-Forwarded-For from any peer
// in trusted_proxies, a pod range, so exactly one NetworkPolicy must
// select them and admit their HTTP port only from a namespace selected by
// label (the ingress controller's), never from everyone; its ports name
// ports of the gateway container, and the port Prometheus scrapes stays
// reachable.
func checkNetworkPolicy(t *testing.T, m manifests, gw *appsv1.Deployment) {
	t.Helper()
	gwLabels := labels.Set(gw.Spec.Template.Labels)
	c := gw.Spec.Template.Spec.Containers[0]
	var selecting []*networkingv1.NetworkPolicy
	for name, np := range m.policies {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			t.Fatalf("networkpolicy %s: %v", name, err)
		}
		if sel.Empty() || !sel.Matches(gwLabels) {
			t.Errorf("networkpolicy %s does not select the gateway pods (and only pods like them)", name)
			continue
		}
		selecting = append(selecting, np)
	}
	if len(selecting) != 1 {
		t.Fatalf("%d NetworkPolicies select the gateways, want 1", len(selecting))
	}
	np := selecting[0]
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Errorf("networkpolicy %s: policyTypes %v lack Ingress", np.Name, np.Spec.PolicyTypes)
	}
	admitted := map[string]bool{} // container port names
	for i, rule := range np.Spec.Ingress {
		if len(rule.Ports) == 0 {
			t.Errorf("networkpolicy %s rule %d admits every port", np.Name, i+1)
		}
		if len(rule.From) == 0 {
			t.Errorf("networkpolicy %s rule %d admits every peer", np.Name, i+1)
		}
		for _, peer := range rule.From {
			if peer.IPBlock != nil || peer.NamespaceSelector == nil || len(peer.NamespaceSelector.MatchLabels)+len(peer.NamespaceSelector.MatchExpressions) == 0 {
				t.Errorf("networkpolicy %s rule %d: peer %+v is not a namespace chosen by label", np.Name, i+1, peer)
			}
		}
		for _, p := range rule.Ports {
			if p.Port == nil || !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == p.Port.String() }) {
				t.Errorf("networkpolicy %s rule %d: port %v is not a named port of the gateway container", np.Name, i+1, p.Port)
				continue
			}
			admitted[p.Port.String()] = true
		}
	}
	for _, p := range m.services["roomcast-gateway"].Spec.Ports {
		if !admitted[p.TargetPort.String()] {
			t.Errorf("networkpolicy %s does not admit the Service's target port %s: the ingress could not reach the gateways", np.Name, p.TargetPort.String())
		}
	}
	if scrape := gw.Spec.Template.Annotations["prometheus.io/port"]; scrape != "" {
		i := slices.IndexFunc(c.Ports, func(cp corev1.ContainerPort) bool { return fmt.Sprint(cp.ContainerPort) == scrape })
		if i < 0 || !admitted[c.Ports[i].Name] {
			t.Errorf("networkpolicy %s does not admit the scraped port %s", np.Name, scrape)
		}
	}
}

func shutdownTimeout(t *testing.T, configYAML string) time.Duration {
	t.Helper()
	var cfg struct {
		ShutdownTimeout string `json:"shutdown_timeout"`
	}
	if err := yaml.Unmarshal([]byte(configYAML), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.ShutdownTimeout == "" {
		return 15 * time.Second // the default in the repository's config.yaml
	}
	d, err := time.ParseDuration(cfg.ShutdownTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestNATSValues: the Helm values parse and ask for what roomcast needs,
// a 3-node cluster with JetStream.
func TestNATSValues(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(dir, "nats-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Config struct {
			Cluster struct {
				Enabled  bool `json:"enabled"`
				Replicas int  `json:"replicas"`
			} `json:"cluster"`
			JetStream struct {
				Enabled bool `json:"enabled"`
			} `json:"jetstream"`
		} `json:"config"`
	}
	if err := yaml.Unmarshal(bytes.TrimSpace(b), &v); err != nil {
		t.Fatal(err)
	}
	if !v.Config.Cluster.Enabled || v.Config.Cluster.Replicas != 3 || !v.Config.JetStream.Enabled {
		t.Errorf("nats-values.yaml: cluster %+v, jetstream %+v; want a 3-node cluster with JetStream", v.Config.Cluster, v.Config.JetStream)
	}
}
