// The owner of the trainer Jobs: a ConfigMap the Helm chart installs (TRANSFERLAB_K8S_JOB_OWNER).
// Its uid goes into every Job's ownerReferences, so that `helm uninstall`, which deletes the
// ConfigMap, has the garbage collector delete the Jobs and their pods as well.
import { CoreV1Api, type KubeConfig, type V1OwnerReference } from '@kubernetes/client-node';

/**
 * The owner reference of ConfigMap `name` in `namespace`, read once at start-up. Fails naming the
 * ConfigMap and the variable when it cannot be read: Jobs without their owner would outlive the
 * release. No `blockOwnerDeletion`: that would need update rights on the owner's finalizers, and
 * nothing waits on the Jobs' deletion.
 */
export async function jobOwnerReference(
  kubeConfig: KubeConfig,
  namespace: string,
  name: string,
): Promise<V1OwnerReference> {
  let uid: string | undefined;
  try {
    uid = (await kubeConfig.makeApiClient(CoreV1Api).readNamespacedConfigMap({ name, namespace })).metadata?.uid;
  } catch (error) {
    const reason = (error as { code?: number }).code ?? (error as Error).message.split('\n')[0];
    throw new Error(
      `cannot read ConfigMap ${namespace}/${name}, the owner of the trainer Jobs (TRANSFERLAB_K8S_JOB_OWNER): ${reason}`,
    );
  }
  if (!uid) throw new Error(`ConfigMap ${namespace}/${name} (TRANSFERLAB_K8S_JOB_OWNER) has no uid`);
  return { apiVersion: 'v1', kind: 'ConfigMap', name, uid };
}
