// SPDX-License-Identifier: GPL-2.0
/*
 * vgpu_import: the guest side of the vgpu importer device (docs/importer-protocol.md).
 *
 * A virtio driver for device id 34 (the importer rides on QEMU's vhost-user-i2c-pci). It claims
 * a device only if the device answers IDENTIFY as a vgpu importer, then offers /dev/vgpu-import
 * (vgpu_import.h): a virtio-gpu dma-buf fd or a raw UUID in, a handle and the host buffer's
 * layout and digest out. The module never keeps the dma-buf: only its UUID crosses to the host.
 *
 * The device is not trusted: every answer is checked (used length, magic, version, tag, status)
 * and a device that answers wrongly or not at all is given up (EIO from then on). One request is
 * in flight at a time, in one request/response buffer pair per device that stays allocated until
 * the device is reset in remove(), so a late answer can only ever land in memory we own.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/compat.h>
#include <linux/completion.h>
#include <linux/dma-buf.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/kref.h>
#include <linux/ktime.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/uuid.h>
#include <linux/version.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_dma_buf.h>
#include <linux/xarray.h>

#include "vgpu_import.h"

#define VGI_VIRTIO_ID 34 /* VIRTIO_ID_I2C_ADAPTER: the transport QEMU lets us use */
#define VGI_NAME_PREFIX "vgpu-import"
#define VGI_MAX_DEVICES 16

static unsigned int identify_timeout_ms = 5000;
module_param(identify_timeout_ms, uint, 0444);
MODULE_PARM_DESC(identify_timeout_ms, "How long probe waits for the IDENTIFY answer (ms)");

static unsigned int request_timeout_ms = 10000;
module_param(request_timeout_ms, uint, 0644);
MODULE_PARM_DESC(request_timeout_ms,
		 "How long a request may take before the device is given up (ms)");

struct vgi_dev {
	struct virtio_device *vdev;
	struct virtqueue *vq;
	struct miscdevice misc;
	bool misc_registered; /* bound: until then failures are told once, by probe */
	char why[96];         /* the last failure, for that line */
	int index;
	char name[24];
	struct kref ref; /* probe's, plus one per open file */

	/* Held for a whole exchange: one request in flight, the buffers are ours meanwhile. */
	struct mutex lock;
	struct vgpu_import_wire_req *req;   /* kmalloc'd: DMA-able, never on the stack */
	struct vgpu_import_wire_resp *resp;
	u64 next_tag;
	unsigned long deadline; /* jiffies: when the request in flight is given up */
	u16 cur_type;           /* the request in flight, for the log */
	u64 cur_tag;
	unsigned int cur_timeout_ms;

	/* vq_lock orders the vq callback against senders and remove(). */
	spinlock_t vq_lock;
	struct completion done;
	bool in_flight; /* the device owns req/resp (answer pending) */
	bool answered;  /* the device returned them; used_len is valid */
	u32 used_len;
	bool broken;    /* given up: never send again (the device may still own the buffers) */
	bool gone;      /* remove() has started */
};

struct vgi_file {
	struct vgi_dev *dev;
	struct xarray handles; /* handles this file imported and has not released */
};

static DEFINE_IDA(vgi_ida);

static void vgi_free(struct kref *ref)
{
	struct vgi_dev *dev = container_of(ref, struct vgi_dev, ref);

	kfree(dev->req);
	kfree(dev->resp);
	kfree(dev);
}

static void vgi_mark_broken(struct vgi_dev *dev, const char *why)
{
	unsigned long flags;
	bool was;

	spin_lock_irqsave(&dev->vq_lock, flags);
	was = dev->broken;
	dev->broken = true;
	spin_unlock_irqrestore(&dev->vq_lock, flags);
	if (!was && dev->misc_registered)
		dev_err(&dev->vdev->dev, "device given up: %s (every request now fails with EIO)\n",
			why);
}

static void vgi_vq_done(struct virtqueue *vq)
{
	struct vgi_dev *dev = vq->vdev->priv;
	unsigned long flags;
	unsigned int len;

	spin_lock_irqsave(&dev->vq_lock, flags);
	/* Anything returned while nothing is pending (after a timeout) is dropped. */
	while (virtqueue_get_buf(vq, &len)) {
		if (dev->in_flight && !dev->answered) {
			dev->used_len = len;
			dev->answered = true;
			complete(&dev->done);
		}
	}
	spin_unlock_irqrestore(&dev->vq_lock, flags);
}

/*
 * Waits for the request in flight until its deadline. 0: answered (the buffers are ours again).
 * -EINTR: a signal came first; the request stays in flight and the next exchange waits for it
 * (abandoned, never mistaken for its own answer). -ETIMEDOUT: the device is given up.
 */
static int vgi_wait(struct vgi_dev *dev, bool interruptible)
{
	long left = (long)(dev->deadline - jiffies);
	unsigned long flags;
	bool answered, gone;
	long ret;

	if (left < 1)
		left = 1;
	if (interruptible)
		ret = wait_for_completion_interruptible_timeout(&dev->done, left);
	else
		ret = wait_for_completion_timeout(&dev->done, left);

	spin_lock_irqsave(&dev->vq_lock, flags);
	answered = dev->answered;
	gone = dev->gone;
	if (answered)
		dev->in_flight = false;
	spin_unlock_irqrestore(&dev->vq_lock, flags);

	if (answered)
		return 0;
	if (gone)
		return -ENODEV;
	if (ret < 0)
		return -EINTR;
	if (time_before(jiffies, dev->deadline))
		return -EINTR; /* woken early without an answer: cannot happen, stay safe */
	snprintf(dev->why, sizeof(dev->why), "request %u (tag %llu) not answered within %u ms",
		 dev->cur_type, dev->cur_tag, dev->cur_timeout_ms);
	if (dev->misc_registered)
		dev_err_ratelimited(&dev->vdev->dev, "%s\n", dev->why);
	vgi_mark_broken(dev, "no answer in time");
	return -ETIMEDOUT;
}

/*
 * One request and its checked answer, copied to *out. Caller holds dev->lock. The wire request
 * is built from type, handle and uuid; rtt_ns gets the time from kick to answer.
 */
static int vgi_exchange(struct vgi_dev *dev, u16 type, u32 handle, const u8 *uuid,
			unsigned int timeout_ms, bool interruptible,
			struct vgpu_import_wire_resp *out, u64 *rtt_ns)
{
	struct scatterlist sg_out, sg_in, *sgs[2];
	struct device *d = &dev->vdev->dev;
	unsigned long flags;
	ktime_t t0 = 0;
	u64 tag;
	int ret;

	if (READ_ONCE(dev->gone))
		return -ENODEV;
	if (READ_ONCE(dev->broken))
		return -EIO;
	if (READ_ONCE(dev->in_flight)) {
		/* A signalled caller left its request behind: let it finish first. */
		ret = vgi_wait(dev, interruptible);
		if (ret)
			return ret;
	}

	tag = ++dev->next_tag;
	memset(dev->req, 0, sizeof(*dev->req));
	dev->req->magic = cpu_to_le32(VGPU_IMPORT_WIRE_MAGIC);
	dev->req->version = cpu_to_le16(VGPU_IMPORT_WIRE_VERSION);
	dev->req->type = cpu_to_le16(type);
	dev->req->tag = cpu_to_le64(tag);
	dev->req->handle = cpu_to_le32(handle);
	if (uuid)
		memcpy(dev->req->uuid, uuid, sizeof(dev->req->uuid));
	memset(dev->resp, 0, sizeof(*dev->resp));

	sg_init_one(&sg_out, dev->req, sizeof(*dev->req));
	sg_init_one(&sg_in, dev->resp, sizeof(*dev->resp));
	sgs[0] = &sg_out;
	sgs[1] = &sg_in;

	reinit_completion(&dev->done);
	dev->deadline = jiffies + msecs_to_jiffies(timeout_ms);
	dev->cur_type = type;
	dev->cur_tag = tag;
	dev->cur_timeout_ms = timeout_ms;
	spin_lock_irqsave(&dev->vq_lock, flags);
	if (dev->gone) {
		spin_unlock_irqrestore(&dev->vq_lock, flags);
		return -ENODEV;
	}
	ret = virtqueue_add_sgs(dev->vq, sgs, 1, 1, dev, GFP_ATOMIC);
	if (!ret) {
		dev->in_flight = true;
		dev->answered = false;
		t0 = ktime_get();
		virtqueue_kick(dev->vq);
	}
	spin_unlock_irqrestore(&dev->vq_lock, flags);
	if (ret) {
		/* One request at a time in a 4-entry queue: no room means the device kept buffers. */
		strscpy(dev->why, "no room in the request queue", sizeof(dev->why));
		vgi_mark_broken(dev, dev->why);
		return -EIO;
	}

	ret = vgi_wait(dev, interruptible);
	if (rtt_ns)
		*rtt_ns = ktime_to_ns(ktime_sub(ktime_get(), t0));
	if (ret)
		return ret;

	memcpy(out, dev->resp, sizeof(*out));
	if (dev->used_len != VGPU_IMPORT_WIRE_RESP_SIZE) {
		snprintf(dev->why, sizeof(dev->why), "answer of %u bytes, %u expected",
			 dev->used_len, VGPU_IMPORT_WIRE_RESP_SIZE);
		goto broken;
	}
	if (le32_to_cpu(out->magic) != VGPU_IMPORT_WIRE_MAGIC ||
	    le16_to_cpu(out->version) != VGPU_IMPORT_WIRE_VERSION ||
	    le64_to_cpu(out->tag) != tag ||
	    le16_to_cpu(out->status) > VGPU_IMPORT_STATUS_NO_HANDLES) {
		snprintf(dev->why, sizeof(dev->why),
			 "bad answer: magic %#x version %u tag %llu (sent %llu) status %u",
			 le32_to_cpu(out->magic), le16_to_cpu(out->version),
			 le64_to_cpu(out->tag), tag, le16_to_cpu(out->status));
		goto broken;
	}
	return 0;

broken:
	ret = -EIO;
	if (dev->misc_registered)
		dev_err_ratelimited(d, "%s\n", dev->why);
	vgi_mark_broken(dev, "malformed answer");
	return ret;
}

static void vgi_fill(struct vgpu_import *arg, const struct vgpu_import_wire_resp *r, u64 rtt)
{
	arg->status = le16_to_cpu(r->status);
	arg->handle = le32_to_cpu(r->handle);
	arg->device = le32_to_cpu(r->device);
	arg->resource_id = le32_to_cpu(r->resource_id);
	arg->fourcc = le32_to_cpu(r->fourcc);
	arg->width = le32_to_cpu(r->width);
	arg->height = le32_to_cpu(r->height);
	arg->stride = le32_to_cpu(r->stride);
	arg->offset = le32_to_cpu(r->offset);
	arg->host_kind = le32_to_cpu(r->host_kind);
	arg->coherency = le32_to_cpu(r->coherency);
	arg->path = le32_to_cpu(r->path);
	arg->shared_object_status = (s32)le32_to_cpu(r->shared_object_status);
	arg->size = le64_to_cpu(r->size);
	arg->digest = le64_to_cpu(r->digest);
	arg->device_ns = le64_to_cpu(r->device_ns);
	arg->round_trip_ns = rtt;
}

/* The UUID of a virtio dma-buf fd. The dma-buf is held only for this call. */
static int vgi_uuid_of_fd(struct vgi_dev *dev, int fd, u8 *uuid)
{
	struct device *d = &dev->vdev->dev;
	struct dma_buf *buf;
	uuid_t id;
	int ret;

	buf = dma_buf_get(fd); /* -EBADF: no such file; -EINVAL: not a dma-buf */
	if (IS_ERR(buf))
		return PTR_ERR(buf);
	if (!is_virtio_dma_buf(buf)) {
		dev_info_ratelimited(d, "fd %d is a dma-buf of %s, not a virtio dma-buf (no UUID)\n",
				     fd, buf->exp_name ? buf->exp_name : "an unnamed exporter");
		dma_buf_put(buf);
		return -EINVAL;
	}
	ret = virtio_dma_buf_get_uuid(buf, &id);
	dma_buf_put(buf);
	if (ret) {
		dev_info_ratelimited(d, "fd %d: the exporter gave no UUID (%d)\n", fd, ret);
		return -ENODEV;
	}
	memcpy(uuid, id.b, sizeof(id.b));
	return 0;
}

static int vgi_import(struct vgi_file *f, struct vgpu_import *arg)
{
	struct vgi_dev *dev = f->dev;
	struct vgpu_import_wire_resp r;
	u32 handle;
	u64 rtt;
	int ret;

	mutex_lock(&dev->lock);
	ret = vgi_exchange(dev, VGPU_IMPORT_REQ_IMPORT, 0, arg->uuid, request_timeout_ms, true,
			   &r, &rtt);
	if (ret)
		goto out;
	vgi_fill(arg, &r, rtt);
	if (arg->status != VGPU_IMPORT_STATUS_OK)
		goto out;
	handle = arg->handle;
	if (handle == 0 || xa_load(&f->handles, handle)) {
		dev_err_ratelimited(&dev->vdev->dev, "IMPORT answered handle %u twice or 0\n",
				    handle);
		vgi_mark_broken(dev, "bad handle in an IMPORT answer");
		ret = -EIO;
		goto out;
	}
	ret = xa_insert(&f->handles, handle, xa_mk_value(1), GFP_KERNEL);
	if (ret) {
		/* Cannot track it, so cannot release it on close: give it back now. */
		vgi_exchange(dev, VGPU_IMPORT_REQ_RELEASE, handle, NULL, request_timeout_ms,
			     false, &r, NULL);
		ret = -ENOMEM;
	}
out:
	mutex_unlock(&dev->lock);
	return ret;
}

/* QUERY and RELEASE: only for a handle this file holds (EINVAL otherwise, no request). */
static int vgi_handle_request(struct vgi_file *f, u16 type, struct vgpu_import *arg)
{
	struct vgi_dev *dev = f->dev;
	struct vgpu_import_wire_resp r;
	u32 handle = arg->handle;
	u64 rtt;
	int ret;

	mutex_lock(&dev->lock);
	if (handle == 0 || !xa_load(&f->handles, handle)) {
		ret = -EINVAL;
		goto out;
	}
	ret = vgi_exchange(dev, type, handle, NULL, request_timeout_ms, true, &r, &rtt);
	if (ret)
		goto out;
	vgi_fill(arg, &r, rtt);
	arg->handle = handle;
	/* Answered: whatever the status, the device no longer holds it for us. */
	if (type == VGPU_IMPORT_REQ_RELEASE)
		xa_erase(&f->handles, handle);
out:
	mutex_unlock(&dev->lock);
	return ret;
}

static long vgi_ioctl(struct file *file, unsigned int cmd, unsigned long uarg)
{
	struct vgi_file *f = file->private_data;
	void __user *p = (void __user *)uarg;
	struct vgpu_import arg;
	int ret;

	switch (cmd) {
	case VGPU_IMPORT_IOCTL_IMPORT:
	case VGPU_IMPORT_IOCTL_IMPORT_UUID:
	case VGPU_IMPORT_IOCTL_QUERY:
	case VGPU_IMPORT_IOCTL_RELEASE:
		break;
	default:
		return -ENOTTY;
	}
	if (copy_from_user(&arg, p, sizeof(arg)))
		return -EFAULT;
	if (arg.flags || arg.pad)
		return -EINVAL;

	switch (cmd) {
	case VGPU_IMPORT_IOCTL_IMPORT:
		ret = vgi_uuid_of_fd(f->dev, arg.fd, arg.uuid);
		if (!ret)
			ret = vgi_import(f, &arg);
		break;
	case VGPU_IMPORT_IOCTL_IMPORT_UUID:
		ret = vgi_import(f, &arg);
		break;
	case VGPU_IMPORT_IOCTL_QUERY:
		ret = vgi_handle_request(f, VGPU_IMPORT_REQ_QUERY, &arg);
		break;
	default:
		ret = vgi_handle_request(f, VGPU_IMPORT_REQ_RELEASE, &arg);
		break;
	}
	if (ret)
		return ret;
	if (copy_to_user(p, &arg, sizeof(arg)))
		return -EFAULT;
	return 0;
}

static int vgi_open(struct inode *inode, struct file *file)
{
	/* misc_open set private_data to our miscdevice, under misc_mtx: remove() is not done. */
	struct vgi_dev *dev = container_of(file->private_data, struct vgi_dev, misc);
	struct vgi_file *f;

	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return -ENOMEM;
	xa_init(&f->handles);
	kref_get(&dev->ref);
	f->dev = dev;
	file->private_data = f;
	return 0;
}

/* Best effort: every handle the file still holds is released; nothing is sent once broken. */
static int vgi_release(struct inode *inode, struct file *file)
{
	struct vgi_file *f = file->private_data;
	struct vgi_dev *dev = f->dev;
	struct vgpu_import_wire_resp r;
	unsigned long handle;
	unsigned int left = 0;
	void *entry;

	mutex_lock(&dev->lock);
	xa_for_each(&f->handles, handle, entry) {
		/* Not interruptible: a dying process has SIGKILL pending. Bounded by the timeout. */
		if (vgi_exchange(dev, VGPU_IMPORT_REQ_RELEASE, handle, NULL, request_timeout_ms,
				 false, &r, NULL))
			left++;
	}
	mutex_unlock(&dev->lock);
	if (left)
		dev_info_ratelimited(&dev->vdev->dev,
				     "%u handle(s) not released on close (device gone or given up)\n",
				     left);
	xa_destroy(&f->handles);
	kfree(f);
	kref_put(&dev->ref, vgi_free);
	return 0;
}

static const struct file_operations vgi_fops = {
	.owner = THIS_MODULE,
	.open = vgi_open,
	.release = vgi_release,
	.unlocked_ioctl = vgi_ioctl,
	/* struct vgpu_import has the same layout on 32-bit (every __u64 is 8-aligned). */
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

/* NUL-padded, untrusted: printable ASCII only, for the log. */
static void vgi_device_name(const struct vgpu_import_wire_resp *r, char *buf, size_t size)
{
	size_t i;

	for (i = 0; i + 1 < size && i < sizeof(r->name) && r->name[i]; i++)
		buf[i] = (r->name[i] >= 0x20 && r->name[i] < 0x7f) ? r->name[i] : '?';
	buf[i] = '\0';
}

static int vgi_identify(struct vgi_dev *dev)
{
	struct device *d = &dev->vdev->dev;
	struct vgpu_import_wire_resp r;
	char name[sizeof(r.name) + 1];
	int ret;

	mutex_lock(&dev->lock);
	ret = vgi_exchange(dev, VGPU_IMPORT_REQ_IDENTIFY, 0, NULL, identify_timeout_ms, false,
			   &r, NULL);
	mutex_unlock(&dev->lock);
	if (ret) {
		dev_info(d, "virtio device %u is not a vgpu importer (IDENTIFY: %s); leaving it alone\n",
			 VGI_VIRTIO_ID, dev->why[0] ? dev->why : "no answer");
		return -ENODEV;
	}
	vgi_device_name(&r, name, sizeof(name));
	if (le16_to_cpu(r.status) != VGPU_IMPORT_STATUS_OK ||
	    strncmp(name, VGI_NAME_PREFIX, strlen(VGI_NAME_PREFIX)) != 0) {
		dev_info(d, "virtio device %u is not a vgpu importer (IDENTIFY status %u, name \"%s\"); leaving it alone\n",
			 VGI_VIRTIO_ID, le16_to_cpu(r.status), name);
		return -ENODEV;
	}
	dev_info(d, "%s: importer \"%s\", %u handles, features %#x\n", dev->name, name,
		 le32_to_cpu(r.max_handles), le32_to_cpu(r.features));
	return 0;
}

static void vgi_stop(struct vgi_dev *dev)
{
	unsigned long flags;

	spin_lock_irqsave(&dev->vq_lock, flags);
	dev->gone = true;
	spin_unlock_irqrestore(&dev->vq_lock, flags);
	complete_all(&dev->done); /* a waiter sees gone and leaves */

	mutex_lock(&dev->lock);
	/* After the reset the device can no longer touch req/resp: they may be freed. */
	virtio_reset_device(dev->vdev);
	dev->vdev->config->del_vqs(dev->vdev);
	dev->vq = NULL;
	mutex_unlock(&dev->lock);
}

static int vgi_probe(struct virtio_device *vdev)
{
	struct vgi_dev *dev;
	int ret;

	dev = kzalloc(sizeof(*dev), GFP_KERNEL);
	if (!dev)
		return -ENOMEM;
	kref_init(&dev->ref);
	mutex_init(&dev->lock);
	spin_lock_init(&dev->vq_lock);
	init_completion(&dev->done);
	dev->vdev = vdev;
	dev->index = -1;
	dev->req = kmalloc(sizeof(*dev->req), GFP_KERNEL);
	dev->resp = kmalloc(sizeof(*dev->resp), GFP_KERNEL);
	if (!dev->req || !dev->resp) {
		ret = -ENOMEM;
		goto err_free;
	}
	dev->index = ida_alloc_max(&vgi_ida, VGI_MAX_DEVICES - 1, GFP_KERNEL);
	if (dev->index < 0) {
		ret = dev->index;
		goto err_free;
	}
	if (dev->index == 0)
		strscpy(dev->name, VGI_NAME_PREFIX, sizeof(dev->name));
	else
		snprintf(dev->name, sizeof(dev->name), VGI_NAME_PREFIX "%d", dev->index);

	dev->vq = virtio_find_single_vq(vdev, vgi_vq_done, "request");
	if (IS_ERR(dev->vq)) {
		ret = PTR_ERR(dev->vq);
		dev->vq = NULL;
		goto err_free;
	}
	vdev->priv = dev;
	virtio_device_ready(vdev);

	ret = vgi_identify(dev);
	if (ret)
		goto err_stop;

	dev->misc.minor = MISC_DYNAMIC_MINOR;
	dev->misc.name = dev->name;
	dev->misc.fops = &vgi_fops;
	dev->misc.parent = &vdev->dev;
	dev->misc_registered = true; /* before the node exists: its first ioctl may fail */
	ret = misc_register(&dev->misc);
	if (ret) {
		dev->misc_registered = false;
		dev_err(&vdev->dev, "misc_register %s: %d\n", dev->name, ret);
		goto err_stop;
	}
	dev_info(&vdev->dev, "bound: /dev/%s\n", dev->name);
	return 0;

err_stop:
	vgi_stop(dev);
	vdev->priv = NULL;
err_free:
	if (dev->index >= 0)
		ida_free(&vgi_ida, dev->index);
	kref_put(&dev->ref, vgi_free);
	return ret;
}

static void vgi_remove(struct virtio_device *vdev)
{
	struct vgi_dev *dev = vdev->priv;

	/* No new opens; open files keep dev (kref) and get ENODEV from now on. */
	if (dev->misc_registered)
		misc_deregister(&dev->misc);
	vgi_stop(dev);
	vdev->priv = NULL;
	ida_free(&vgi_ida, dev->index);
	dev_info(&vdev->dev, "%s removed\n", dev->name);
	kref_put(&dev->ref, vgi_free);
}

static const struct virtio_device_id vgi_id_table[] = {
	{ VGI_VIRTIO_ID, VIRTIO_DEV_ANY_ID },
	{ 0 },
};
MODULE_DEVICE_TABLE(virtio, vgi_id_table);

static struct virtio_driver vgi_driver = {
	.driver.name = KBUILD_MODNAME,
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 12, 0)
	.driver.owner = THIS_MODULE,
#endif
	.id_table = vgi_id_table,
	.probe = vgi_probe,
	.remove = vgi_remove,
};

static int __init vgi_init(void)
{
	BUILD_BUG_ON(sizeof(struct vgpu_import_wire_req) != VGPU_IMPORT_WIRE_REQ_SIZE);
	BUILD_BUG_ON(sizeof(struct vgpu_import_wire_resp) != VGPU_IMPORT_WIRE_RESP_SIZE);
	BUILD_BUG_ON(sizeof(struct vgpu_import) != 112);
	return register_virtio_driver(&vgi_driver);
}

static void __exit vgi_exit(void)
{
	unregister_virtio_driver(&vgi_driver);
	ida_destroy(&vgi_ida);
}

module_init(vgi_init);
module_exit(vgi_exit);

MODULE_DESCRIPTION("vgpu importer: import virtio-gpu buffers on the host by UUID");
MODULE_LICENSE("GPL");
/* dma_buf_get/dma_buf_put are exported in namespace DMA_BUF; 6.13 made the argument a string. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 13, 0)
MODULE_IMPORT_NS("DMA_BUF");
#else
MODULE_IMPORT_NS(DMA_BUF);
#endif
